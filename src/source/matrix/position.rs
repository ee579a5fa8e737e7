//! Where capture stands: the sync token to resume from, and each room's last captured event (where a
//! gap in a room's timeline is filled back to). Saved only after everything before it is durable, so a
//! restart, even after kill -9, re-reads from a point whose events are all on disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::MatrixError;

const POSITION_FILE: &str = "sync.json";

#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Position {
    /// `next_batch` of the last sync whose events are durable; `None` before the first.
    pub next_batch: Option<String>,
    /// Room ID → ID of the last event captured in it.
    pub rooms: BTreeMap<String, String>,
    /// Rooms the bot can no longer capture (`Matrix_Rooms_Lost`) → the room whose loss each stands
    /// for (itself after a kick or ban; the upgraded room for a replacement the bot cannot join).
    /// Saved with the position, so a restart goes on raising them until the bot is back in.
    #[serde(default)]
    pub lost: BTreeMap<String, String>,
}

impl Position {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(POSITION_FILE)
    }

    pub fn load(dir: &Path) -> Result<Self, MatrixError> {
        let path = Self::path(dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                MatrixError::state_from(
                    format!(
                        "{} is damaged; remove it to capture again from the rooms' history",
                        path.display()
                    ),
                    e,
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(MatrixError::io(&path, e)),
        }
    }

    /// The file's path and new contents, for `write_state` (which replaces it atomically).
    pub(crate) fn to_save(&self, dir: &Path) -> Result<(PathBuf, Vec<u8>), MatrixError> {
        let json =
            serde_json::to_vec(self).map_err(|e| MatrixError::state_from("cannot write the position as JSON", e))?;
        Ok((Self::path(dir), json))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Position::load(dir.path()).unwrap(), Position::default());
        let mut p = Position {
            next_batch: Some("s42".into()),
            ..Position::default()
        };
        p.rooms.insert("!r:hs".into(), "$e".into());
        p.lost.insert("!new:hs".into(), "!old:hs".into());
        let (path, bytes) = p.to_save(dir.path()).unwrap();
        crate::durable::write_atomically(&path, &bytes).unwrap();
        assert_eq!(Position::load(dir.path()).unwrap(), p);
        std::fs::write(Position::path(dir.path()), b"{oops").unwrap();
        assert!(matches!(Position::load(dir.path()), Err(MatrixError::State { .. })));
    }
}
