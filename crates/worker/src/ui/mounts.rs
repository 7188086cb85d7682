//! Where the UI folder is served: always at `/ui/` (where `pixell dev` serves
//! it), and at `ui.basePath` too — `/` unless the manifest sets another.
//!
//! Under a dedicated mount (`/ui/`, or a `basePath` such as `/console`) the UI
//! answers first: its files, then the SPA fallback, and only then the agent's
//! own routes. At `/` the agent's routes come first and the UI answers only
//! what they do not (their 404s), so REST keeps precedence outside the mount.

use std::path::Path;

use super::surface::UiSurface;

/// The prefix the UI is always served under.
pub const UI_PREFIX: &str = "/ui";

/// The mounts of one UI folder.
#[derive(Debug, Clone)]
pub struct UiMounts {
    /// Mounts the UI owns: `/ui` first, then a non-root `basePath`.
    dedicated: Vec<UiSurface>,
    /// The mount at `/` (`basePath` unset or `/`), behind the agent's routes.
    root: Option<UiSurface>,
}

impl UiMounts {
    /// Opens the UI folder once and mounts it at `/ui` and at `ui.basePath`.
    pub fn open(package_root: &Path, ui: &par_package::manifest::Ui) -> Result<UiMounts, String> {
        let at_base = UiSurface::open(package_root, ui)?;
        let at_ui = at_base.with_base_path(UI_PREFIX)?;
        let (dedicated, root) = match at_base.base_path() {
            "/" => (vec![at_ui], Some(at_base)),
            base if base == UI_PREFIX => (vec![at_base], None),
            _ => (vec![at_ui, at_base], None),
        };
        Ok(UiMounts { dedicated, root })
    }

    /// The dedicated mount `path` falls under, if any (the longest prefix
    /// when mounts nest, as `/ui` and `/ui/app`).
    pub fn dedicated(&self, path: &str) -> Option<&UiSurface> {
        self.dedicated
            .iter()
            .filter(|m| m.contains(path))
            .max_by_key(|m| m.base_path().len())
    }

    /// The mount at `/`, if the UI has one.
    pub fn root(&self) -> Option<&UiSurface> {
        self.root.as_ref()
    }

    /// Every prefix the UI is served under (for `/ui/health`).
    pub fn base_paths(&self) -> Vec<&str> {
        self.dedicated
            .iter()
            .chain(self.root.as_ref())
            .map(UiSurface::base_path)
            .collect()
    }
}
