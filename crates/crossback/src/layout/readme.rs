//! The `README.txt` on each slot: what the disk is, and how to restore from it
//! with the crossback it carries or with zstd, GNU tar (and age) alone.

use super::{Encryption, SlotId};

/// The README written on each slot: how to restore without crossback.
pub fn text(media_id: &str, letter: SlotId, encryption: Option<&Encryption>) -> String {
    let plain = "RESTORING WITHOUT CROSSBACK: an archive is a standard tar stream compressed\n\
         with zstd. As root, with GNU tar and zstd installed:\n\
         \n    mkdir /mnt/target\n\
         \n    zstd -dc root.tar.zst | tar --xattrs --xattrs-include='*' --acls \\\n\
         \x20       --numeric-owner -xpf - -C /mnt/target\n";
    let encrypted = "THIS MEDIA IS ENCRYPTED (age, https://age-encryption.org). The archives\n\
         (root.tar.zst.age …), mounts.toml.age and config.toml.age are encrypted to the\n\
         media key; the media key is kept here encrypted with your passphrase\n\
         (crossback/media-key.passphrase.age) and/or to your own age keys\n\
         (crossback/media-key.recipients.age). Nothing here opens without one of them.\n\
         \n\
         RESTORING WITHOUT CROSSBACK, with age, zstd and GNU tar installed, as root:\n\
         first the media key (it stays in memory: /dev/shm), with the passphrase\n\
         \n    age -d -o /dev/shm/media-key crossback/media-key.passphrase.age\n\
         \nor with your own key\n\
         \n    age -d -i ~/my-age-key.txt -o /dev/shm/media-key crossback/media-key.recipients.age\n\
         \nthen the archive:\n\
         \n    mkdir /mnt/target\n\
         \n    age -d -i /dev/shm/media-key root.tar.zst.age | zstd -dc | \\\n\
         \x20       tar --xattrs --xattrs-include='*' --acls --numeric-owner -xpf - -C /mnt/target\n\
         \n    rm /dev/shm/media-key\n";
    format!(
        "This filesystem is slot {letter} of a crossback backup disk (media {media_id}).\n\
         \n\
         crossback (https://crates.io/crates/crossback) keeps full backups of the Linux\n\
         systems of one machine here, in generations: crossback/gen-NNNNNN/. The two\n\
         slots of the disk take turns; the newest generation marked `state = \"sealed\"`\n\
         in its generation.toml is the newest complete set.\n\
         \n\
         Each system has a directory, and one archive per filesystem in it:\n\
         root.tar.zst for /, home.tar.zst for /home, boot-efi.tar.zst for /boot/efi.\n\
         mounts.toml says which filesystem each archive holds (type, UUID, label).\n\
         \n\
         {}\
         \n\
         This restores files, owners, permissions, times, xattrs, ACLs and capabilities\n\
         (inode flags such as chattr +i are kept only by `crossback restore`). Extra\n\
         data at the end of each archive (its index) is ignored by zstd and tar.\n\
         \n\
         RESTORING WITH CROSSBACK FROM ANY LIVE SYSTEM: crossback/crossback is the\n\
         crossback program that wrote this disk (crossback.version says which; when\n\
         it is missing, the build that wrote the disk was too large to carry: install\n\
         crossback instead). As root, from a live USB or a new system, with this disk\n\
         mounted (`mount -o ro` is enough) and the new one attached:\n\
         \n    /media/…/crossback/crossback init            (takes the configuration from here)\n\
         \n    /media/…/crossback/crossback restore --bare-metal --disk /dev/NEWDISK   (shows what it will write, asks)\n\
         {}\
         \n\
         Do not put other files on this filesystem: crossback refuses a slot that holds\n\
         files it did not write, so that it never wipes anything of yours.\n",
        if encryption.is_some() { encrypted } else { plain },
        if encryption.is_some() { "\n(crossback asks for the passphrase, or give --identity ~/my-age-key.txt.)\n" } else { "" }
    )
}
