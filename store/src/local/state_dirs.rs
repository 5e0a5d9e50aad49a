//! The state directory as Nix lays it out when it opens a local store:
//! `profiles/` and `gcroots/` (with a link to the profiles, as a root),
//! each with a `per-user/` directory holding one for the user opening the
//! store, and `temproots/`. Nix's own tools and its garbage collector look
//! for them there.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{StoreError, io_err};

/// Makes what is missing of the layout under `state_dir`.
pub(super) fn make_state_dirs(state_dir: &Path) -> Result<(), StoreError> {
    let profiles = state_dir.join("profiles");
    let gcroots = state_dir.join("gcroots");
    let create = |dir: &Path| fs::create_dir_all(dir).map_err(io_err("create directory", dir));
    create(&profiles)?;
    create(&state_dir.join("temproots"))?;
    if !gcroots.exists() {
        create(&gcroots)?;
        let link = gcroots.join("profiles");
        match std::os::unix::fs::symlink(&profiles, &link) {
            Err(e) if e.kind() != ErrorKind::AlreadyExists => {
                return Err(io_err("create symlink", &link)(e));
            }
            _ => {}
        }
    }
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name);
    for per_user in [profiles.join("per-user"), gcroots.join("per-user")] {
        if !per_user.exists() {
            create(&per_user)?;
            fs::set_permissions(&per_user, fs::Permissions::from_mode(0o755))
                .map_err(io_err("chmod", &per_user))?;
        }
        if let Some(user) = &user {
            create(&per_user.join(user))?;
        }
    }
    Ok(())
}
