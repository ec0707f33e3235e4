//! AMQP's limit on names: a vhost, exchange, queue or user name and a routing key travel as
//! short strings (`shortstr`, at most 255 bytes). The API refuses a longer one with 400 rather
//! than store a cut name that no path names any more.

use crate::error::ApiError;

/// The longest name AMQP 0-9-1 can carry, in bytes.
pub(crate) const MAX_NAME_BYTES: usize = 255;

/// `Ok` if `name` fits a short string; else 400 naming what was too long.
pub(crate) fn check(what: &str, name: &str) -> Result<(), ApiError> {
    if name.len() <= MAX_NAME_BYTES {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "{what} is {} bytes long; the limit is {MAX_NAME_BYTES} bytes",
        name.len()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_of_255_bytes_fits_and_256_do_not() {
        assert!(check("queue name", &"q".repeat(255)).is_ok());
        let e = check("queue name", &"é".repeat(128)).expect_err("256 bytes");
        assert_eq!(
            (e.status.as_u16(), e.reason.as_str()),
            (400, "queue name is 256 bytes long; the limit is 255 bytes")
        );
    }
}
