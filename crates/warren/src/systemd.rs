//! systemd's readiness notification (`sd_notify`): under a unit with `Type=notify` the service
//! manager passes a datagram socket in `NOTIFY_SOCKET` and counts the service as started only
//! once it reads `READY=1` there, so units ordered after Warren's start when clients can
//! connect. One datagram, no library: the protocol is a newline-separated `KEY=VALUE` text.

use std::io;
use std::os::unix::net::UnixDatagram;

/// Sends `state` (`READY=1`, `STOPPING=1`, `STATUS=…`) to the service manager; `Ok(false)`
/// when not started by one (no `NOTIFY_SOCKET`).
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    match bytes.strip_prefix(b"@") {
        // An abstract socket (systemd's usual choice).
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        }
        None => {
            socket.send_to(state.as_bytes(), &path)?;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    // nextest runs each test in a process of its own: setting the variable touches no other test.
    #[test]
    fn the_state_goes_to_the_socket_named_by_notify_socket_by_path_or_abstract_name() {
        let dir = std::env::temp_dir().join(format!("warren-notify-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let path = dir.join("notify");
        let by_path = UnixDatagram::bind(&path).expect("binds");
        std::env::set_var("NOTIFY_SOCKET", &path);
        assert!(notify("READY=1").expect("sent"));
        let mut buf = [0u8; 64];
        let n = by_path.recv(&mut buf).expect("received");
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("warren-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .expect("an abstract name");
        let abstract_socket = UnixDatagram::bind_addr(&addr).expect("binds");
        std::env::set_var("NOTIFY_SOCKET", format!("@{name}"));
        assert!(notify("STOPPING=1").expect("sent"));
        let n = abstract_socket.recv(&mut buf).expect("received");
        assert_eq!(&buf[..n], b"STOPPING=1");

        std::env::remove_var("NOTIFY_SOCKET");
        assert!(!notify("READY=1").expect("no socket, no error"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
