//! Who is on the other end of a connection (docs/architecture.md §3, step 2): the uid and
//! primary gid from `SO_PEERCRED`, the supplementary groups from `SO_PEERGROUPS`, all
//! as they were at connect(2), so a peer cannot change them afterwards. A peer is
//! allowed when its uid is in `allowed_uids`, or its primary or any supplementary
//! gid is in `allowed_gids` (the callers' group, e.g. `codejail`, so that adding an
//! app's user to the group is all it takes).

use std::os::fd::AsFd;

use tokio::net::UnixStream;

use crate::config::Settings;

/// The kernel's record of a connected peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Effective uid at connect(2).
    pub uid: u32,
    /// Effective (primary) gid at connect(2).
    pub gid: u32,
    /// Supplementary groups at connect(2).
    pub groups: Vec<u32>,
}

impl Peer {
    /// Read the peer's credentials and groups from the socket.
    pub fn of(stream: &UnixStream) -> std::io::Result<Peer> {
        let cred = stream.peer_cred()?;
        let groups = crate::sys::peer_groups(stream.as_fd())?;
        Ok(Peer {
            uid: cred.uid(),
            gid: cred.gid(),
            groups,
        })
    }

    /// `Err(reason)` unless the allow-lists admit this peer.
    pub fn check_allowed(&self, settings: &Settings) -> Result<(), String> {
        if settings.allowed_uids.contains(&self.uid) {
            return Ok(());
        }
        let gids = std::iter::once(&self.gid).chain(&self.groups);
        if let Some(gid) = gids.clone().find(|g| settings.allowed_gids.contains(g)) {
            tracing::debug!(peer_uid = self.uid, gid, "peer allowed by group");
            return Ok(());
        }
        let mut all: Vec<u32> = gids.copied().collect();
        all.sort_unstable();
        all.dedup();
        let all: Vec<String> = all.iter().map(u32::to_string).collect();
        Err(format!(
            "peer uid {} is not allowed to use this broker (neither the uid nor its groups {} are on the allow-lists)",
            self.uid,
            all.join(",")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codejail_protocol::Mode;

    fn settings(uids: &[u32], gids: &[u32]) -> Settings {
        let cfg: crate::config::FileConfig =
            toml::from_str("[commands.python]\nbin = \"/usr/bin/python3\"\n[cgroup]\nmode = \"none\"\nrequired = false\n")
                .expect("toml");
        let mut s = Settings::from_config(&cfg, Mode::Confined).expect("settings");
        s.allowed_uids = uids.iter().copied().collect();
        s.allowed_gids = gids.iter().copied().collect();
        s
    }

    #[test]
    fn uid_primary_gid_or_supplementary_group_admits() {
        let peer = Peer {
            uid: 33,
            gid: 33,
            groups: vec![33, 997],
        };
        assert!(peer.check_allowed(&settings(&[33], &[])).is_ok());
        assert!(
            peer.check_allowed(&settings(&[], &[997])).is_ok(),
            "supplementary"
        );
        assert!(peer.check_allowed(&settings(&[], &[33])).is_ok(), "primary");
        let e = peer
            .check_allowed(&settings(&[1000], &[998]))
            .expect_err("refused");
        assert!(
            e.contains("peer uid 33 is not allowed") && e.contains("33,997"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_socketpair_peer_is_this_process() {
        let (a, _b) = UnixStream::pair().expect("pair");
        let p = Peer::of(&a).expect("peer");
        assert_eq!(p.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(p.gid, nix::unistd::getegid().as_raw());
    }
}
