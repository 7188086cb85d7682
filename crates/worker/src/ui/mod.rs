//! The UI surface: an agent's static files (`ui.path`), mounted at `/ui/` and
//! at `ui.basePath`, with caching headers, conditional requests and the SPA
//! fallback to `index.html`.

mod files;
mod headers;
mod mounts;
mod surface;
#[cfg(test)]
mod tests;

pub use mounts::UiMounts;
pub use surface::UiSurface;
