//! What the run's view holds of the host, by name: read by `rootfs`, which binds it
//! into the run's root, and by `landlock`, whose rules grant the program access to
//! it, so the mounts and the rules cannot disagree. (Where the workspace and its
//! files are is `codejail_plan::layout`, which the broker reads too.)

/// Top-level host entries exposed when they exist: directories are bound read-only,
/// symlinks (merged /usr: `/lib -> usr/lib`) are recreated as the same symlinks.
pub(crate) const SYSTEM_ENTRIES: [&str; 7] =
    ["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// The system entries the program may read and execute: all of them.
pub(crate) const EXEC_ENTRIES: [&str; 7] = SYSTEM_ENTRIES;

/// The host's `/etc` files a run may read (bound read-only, each with a Landlock read
/// rule): the dynamic loader's cache and the local time zone.
pub(crate) const ETC_FILES: [&str; 2] = ["ld.so.cache", "localtime"];

/// Device nodes bound from the host (`null` read-write, the others read-only).
/// Everything else in /dev is absent.
pub(crate) const DEVICES: [&str; 4] = ["null", "zero", "random", "urandom"];
