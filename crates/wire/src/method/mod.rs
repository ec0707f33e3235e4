//! Methods: decoding a method frame's payload and encoding one.

mod generated;

#[cfg(test)]
pub(crate) use generated::strategy;

pub use generated::*;

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::Reader;
use crate::WireError;

impl Method {
    /// Decodes a method frame payload (class id, method id, arguments). Trailing bytes are a
    /// syntax error, as in RabbitMQ.
    pub fn decode(payload: Bytes) -> Result<Method, WireError> {
        let mut r = Reader::new(payload);
        let class_id = r.u16()?;
        let method_id = r.u16()?;
        let bad = WireError::BadArguments {
            class_id,
            method_id,
        };
        let m = Method::decode_args(class_id, method_id, &mut r).map_err(|e| match e {
            WireError::UnknownMethod { .. } => e,
            _ => bad.clone(),
        })?;
        if r.remaining() != 0 {
            return Err(bad);
        }
        Ok(m)
    }

    /// Appends the method frame payload (class id, method id, arguments) to `w`.
    pub fn encode(&self, w: &mut BytesMut) {
        w.put_u16(self.class_id());
        w.put_u16(self.method_id());
        self.encode_args(w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn every_method_round_trips(m in generated::strategy::arb_method()) {
            let mut w = BytesMut::new();
            m.encode(&mut w);
            prop_assert_eq!(Method::decode(w.freeze()).unwrap(), m);
        }

        #[test]
        fn arbitrary_payloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Method::decode(Bytes::from(bytes));
        }
    }

    #[test]
    fn golden_queue_declare() {
        let m = Method::QueueDeclare(QueueDeclare {
            ticket: 0,
            queue: "q".into(),
            passive: false,
            durable: true,
            exclusive: false,
            auto_delete: true,
            nowait: false,
            arguments: Default::default(),
        });
        let mut w = BytesMut::new();
        m.encode(&mut w);
        assert_eq!(
            &w[..],
            &[0, 50, 0, 10, 0, 0, 1, b'q', 0b0000_1010, 0, 0, 0, 0]
        );
    }

    #[test]
    fn unknown_method_is_reported_with_its_ids() {
        let err = Method::decode(Bytes::from_static(&[0, 60, 0, 99])).unwrap_err();
        assert_eq!(
            err,
            WireError::UnknownMethod {
                class_id: 60,
                method_id: 99
            }
        );
        assert_eq!(err.reply_code(), 503);
    }

    #[test]
    fn exchange_unbind_ok_uses_rabbitmq_id_51() {
        assert_eq!(
            Method::ExchangeUnbindOk(ExchangeUnbindOk {}).method_id(),
            51
        );
        assert_eq!(crate::method_name(40, 51), Some("exchange.unbind-ok"));
    }
}
