//! The one list of event names. Every event watcher writes — decoded from
//! the kernel, read from the snapshot, or derived by the daemon — is named
//! by an [`EventName`], and only here is a name spelled: the JSON `event`
//! field, the syslog MSGID, the metrics' `event` label and their zeroed
//! counters all come from this enum.
use std::fmt;

use serde::{Serialize, Serializer};

macro_rules! event_names {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventName {
            $($(#[$doc])* $variant,)*
        }

        impl EventName {
            /// Every name, in the order the README lists them.
            pub const ALL: &[EventName] = &[$(EventName::$variant,)*];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $(EventName::$variant => $name,)*
                }
            }
        }
    };
}

event_names! {
    /// A socket that already waited when watching began.
    Existing => "existing",
    Bind => "bind",
    Listen => "listen",
    Close => "close",
    BindFailed => "bind_failed",
    ListenFailed => "listen_failed",
    RawSocket => "raw_socket",
    PacketSocket => "packet_socket",
    FilterAttached => "filter_attached",
    Accept => "accept",
    /// A bind refused by enforcement.
    Denied => "denied",
    /// Records the kernel could not deliver.
    Lost => "lost",
    ListenerUp => "listener_up",
    ListenerDown => "listener_down",
    Restarted => "restarted",
    OwnerChanged => "owner_changed",
    ReuseportJoined => "reuseport_joined",
    /// Every process the events named for a listener is gone, others hold it.
    HoldersChanged => "holders_changed",
    Alert => "alert",
    Killed => "killed",
    KillFailed => "kill_failed",
    ConfigReloaded => "config_reloaded",
    ConfigRejected => "config_rejected",
    /// The listener table rebuilt from a fresh snapshot after a loss.
    Resynced => "resynced",
    /// An output could not write for a while; how many lines it dropped.
    OutputDropped => "output_dropped",
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl EventName {
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|n| n.as_str() == text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        for (i, a) in EventName::ALL.iter().enumerate() {
            assert_eq!(EventName::parse(a.as_str()), Some(*a));
            for b in &EventName::ALL[i + 1..] {
                assert_ne!(a.as_str(), b.as_str());
            }
        }
        assert_eq!(serde_json::to_string(&EventName::ListenerUp).unwrap(), "\"listener_up\"");
    }
}
