//! POSIX ACLs: the kernel's xattr blob (`system.posix_acl_access`/`_default`)
//! and the text form GNU tar keeps in `SCHILY.acl.access`/`.default`.
//!
//! crossback writes both, so that GNU tar restores ACLs with `--acls` alone;
//! when reading an archive that only has the text form, the blob is rebuilt.

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
const UNDEFINED_ID: u32 = u32::MAX;

pub const ACCESS_XATTR: &[u8] = b"system.posix_acl_access";
pub const DEFAULT_XATTR: &[u8] = b"system.posix_acl_default";

/// Text form of an ACL blob, numeric ids, one entry per line as GNU tar
/// writes it. `None` when the blob is not a valid version-2 ACL.
pub fn blob_to_text(blob: &[u8]) -> Option<String> {
    if blob.len() < 4 || !(blob.len() - 4).is_multiple_of(8) {
        return None;
    }
    if u32::from_le_bytes(blob[0..4].try_into().ok()?) != VERSION {
        return None;
    }
    let mut text = String::new();
    for e in blob[4..].chunks_exact(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u16::from_le_bytes([e[2], e[3]]);
        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let (name, qual) = match tag {
            USER_OBJ => ("user", None),
            USER => ("user", Some(id)),
            GROUP_OBJ => ("group", None),
            GROUP => ("group", Some(id)),
            MASK => ("mask", None),
            OTHER => ("other", None),
            _ => return None,
        };
        text.push_str(name);
        text.push(':');
        if let Some(id) = qual {
            text.push_str(&id.to_string());
        }
        text.push(':');
        text.push(if perm & 4 != 0 { 'r' } else { '-' });
        text.push(if perm & 2 != 0 { 'w' } else { '-' });
        text.push(if perm & 1 != 0 { 'x' } else { '-' });
        text.push('\n');
    }
    Some(text)
}

/// Blob from the text form (entries separated by newlines or commas). Names
/// instead of numeric ids are resolved with `lookup` (user?, name) -> id.
pub fn text_to_blob(text: &str, lookup: &dyn Fn(bool, &str) -> Option<u32>) -> Option<Vec<u8>> {
    let mut entries: Vec<(u16, u16, u32)> = Vec::new();
    for item in text.split(['\n', ',']) {
        let item = item.split('#').next().unwrap_or("").trim();
        if item.is_empty() {
            continue;
        }
        let mut parts = item.splitn(3, ':');
        let kind = parts.next()?;
        let qual = parts.next()?;
        let perms = parts.next()?;
        let mut perm = 0u16;
        for c in perms.chars() {
            match c {
                'r' => perm |= 4,
                'w' => perm |= 2,
                'x' => perm |= 1,
                '-' => {}
                _ => return None,
            }
        }
        let is_user = matches!(kind, "user" | "u");
        let (tag, id) = match (kind, qual.is_empty()) {
            ("user" | "u", true) => (USER_OBJ, UNDEFINED_ID),
            ("group" | "g", true) => (GROUP_OBJ, UNDEFINED_ID),
            ("mask" | "m", _) => (MASK, UNDEFINED_ID),
            ("other" | "o", _) => (OTHER, UNDEFINED_ID),
            ("user" | "u" | "group" | "g", false) => {
                let id = match qual.parse::<u32>() {
                    Ok(id) => id,
                    Err(_) => lookup(is_user, qual)?,
                };
                (if is_user { USER } else { GROUP }, id)
            }
            _ => return None,
        };
        entries.push((tag, perm, id));
    }
    // The kernel wants entries sorted by tag, then by id.
    entries.sort_by_key(|&(tag, _, id)| (tag, id));
    let mut blob = VERSION.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        blob.extend_from_slice(&tag.to_le_bytes());
        blob.extend_from_slice(&perm.to_le_bytes());
        blob.extend_from_slice(&id.to_le_bytes());
    }
    Some(blob)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Taken from `getfattr` of a file after `setfacl -m u:1234:r-x,g:55:rw`.
    const BLOB: &str = "0200000001000600ffffffff02000500d204000004000400ffffffff080006003700000010000700ffffffff20000400ffffffff";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn blob_text_round_trip_matches_gnu_tar() {
        let blob = unhex(BLOB);
        let text = blob_to_text(&blob).unwrap();
        // What GNU tar 1.34 wrote for the same file.
        assert_eq!(text, "user::rw-\nuser:1234:r-x\ngroup::r--\ngroup:55:rw-\nmask::rwx\nother::r--\n");
        assert_eq!(text_to_blob(&text, &|_, _| None).unwrap(), blob);
        assert_eq!(text_to_blob("u::rw-,u:1234:r-x,g::r--,g:55:rw-,m::rwx,o::r--", &|_, _| None).unwrap(), blob);
    }

    #[test]
    fn names_need_a_lookup() {
        assert!(text_to_blob("user:bob:r--", &|_, _| None).is_none());
        assert!(text_to_blob("user:bob:r--", &|u, n| (u && n == "bob").then_some(7)).is_some());
    }
}
