//! Network set-up inside a sandbox (SPEC B58): a new network namespace holds
//! only `lo`, which starts down; the launched child brings it up.
//!
//! Nix sets the flags with an ioctl on an IPv4 socket; hermetic sends the
//! same request as one rtnetlink message, which needs no `unsafe` and no
//! allocation (it runs between `clone` and `execve`). [`pasta`] gives
//! fixed-output builds user-mode networking (B60).

pub mod pasta;

use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto, socket,
};
use serde::{Deserialize, Serialize};

/// The network a sandbox gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Network {
    /// A new network namespace with only `lo`, up (sandboxed builds).
    #[default]
    Loopback,
    /// The host's network namespace (fixed-output builds).
    Host,
    /// A network namespace of its own with `lo`, and `eth0` bridged to the
    /// host by pasta (fixed-output builds with `pasta-path`, B60).
    Pasta,
}

impl Network {
    /// Whether the sandbox gets its own network namespace.
    pub fn own_namespace(self) -> bool {
        self != Network::Host
    }
}

/// The step of [`loopback_up`] that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoopbackError {
    /// No netlink socket (Nix's text for its socket).
    #[error("cannot open IP socket")]
    Socket(#[source] Errno),
    /// The kernel refused the request (Nix's text).
    #[error("cannot set loopback interface flags")]
    SetFlags(#[source] Errno),
}

/// The loopback interface's index, the same in every network namespace.
const LOOPBACK_INDEX: i32 = 1;
const RTM_NEWLINK: u16 = 16;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const IFF_UP: u32 = 1;

/// An `RTM_NEWLINK` request that sets `IFF_UP` on `lo`: a `nlmsghdr`
/// followed by an `ifinfomsg`, in native byte order.
fn request() -> [u8; 32] {
    let mut message = [0u8; 32];
    message[0..4].copy_from_slice(&32u32.to_ne_bytes()); // nlmsg_len
    message[4..6].copy_from_slice(&RTM_NEWLINK.to_ne_bytes()); // nlmsg_type
    message[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    message[8..12].copy_from_slice(&1u32.to_ne_bytes()); // nlmsg_seq
    // nlmsg_pid 0; ifi_family AF_UNSPEC, padding, ifi_type 0.
    message[20..24].copy_from_slice(&LOOPBACK_INDEX.to_ne_bytes()); // ifi_index
    message[24..28].copy_from_slice(&IFF_UP.to_ne_bytes()); // ifi_flags
    message[28..32].copy_from_slice(&IFF_UP.to_ne_bytes()); // ifi_change
    message
}

/// Brings `lo` up in the current network namespace. Allocates nothing.
pub fn loopback_up() -> Result<(), LoopbackError> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .map_err(LoopbackError::Socket)?;
    let kernel = NetlinkAddr::new(0, 0);
    sendto(fd.as_raw_fd(), &request(), &kernel, MsgFlags::empty())
        .map_err(LoopbackError::SetFlags)?;
    let mut reply = [0u8; 64];
    let length =
        recv(fd.as_raw_fd(), &mut reply, MsgFlags::empty()).map_err(LoopbackError::SetFlags)?;
    ack_status(&reply[..length]).map_err(LoopbackError::SetFlags)
}

/// Reads the kernel's acknowledgement: an `NLMSG_ERROR` whose error field is
/// 0 on success or a negated errno.
fn ack_status(reply: &[u8]) -> Result<(), Errno> {
    if reply.len() < 20 {
        return Err(Errno::EPROTO);
    }
    let kind = u16::from_ne_bytes([reply[4], reply[5]]);
    let error = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
    match (kind, error) {
        (NLMSG_ERROR, 0) => Ok(()),
        (NLMSG_ERROR, negative) => Err(Errno::from_raw(-negative)),
        _ => Err(Errno::EPROTO),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout_matches_the_kernel_structs() {
        let message = request();
        assert_eq!(u32::from_ne_bytes(message[0..4].try_into().unwrap()), 32);
        assert_eq!(
            u16::from_ne_bytes(message[4..6].try_into().unwrap()),
            RTM_NEWLINK
        );
        assert_eq!(i32::from_ne_bytes(message[20..24].try_into().unwrap()), 1);
        assert_eq!(message[16], 0, "AF_UNSPEC");
    }

    #[test]
    fn ack_is_read_as_success_or_errno() {
        let mut reply = [0u8; 36];
        reply[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert_eq!(ack_status(&reply), Ok(()));
        reply[16..20].copy_from_slice(&(-libc_eperm()).to_ne_bytes());
        assert_eq!(ack_status(&reply), Err(Errno::EPERM));
        assert_eq!(ack_status(&reply[..10]), Err(Errno::EPROTO));
    }

    fn libc_eperm() -> i32 {
        Errno::EPERM as i32
    }
}
