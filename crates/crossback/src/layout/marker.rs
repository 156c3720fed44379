//! `crossback/slot.toml`: the marker that makes a filesystem a slot of one
//! media. Written once by `media prepare` (or `media adopt`).

use serde::{Deserialize, Serialize};

use super::SlotId;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Marker {
    pub format: u32,
    pub media_id: String,
    pub slot: SlotId,
    pub prepared: String,
}

impl Marker {
    pub fn new(media_id: &str, slot: SlotId) -> Marker {
        Marker { format: super::FORMAT, media_id: media_id.to_string(), slot, prepared: crate::output::now() }
    }

    /// Writes the marker and the README on a slot (`crossback/` beneath `root`).
    pub fn write(&self, root: &crossback_host::beneath::Dir) -> anyhow::Result<()> {
        let dir = root.create_dir(super::DIR)?;
        dir.write_durable(super::README, crate::media::readme(&self.media_id, self.slot).as_bytes())?;
        dir.write_durable(super::MARKER, toml::to_string(self)?.as_bytes())?;
        crate::media::carry_tool(&dir)
    }
}
