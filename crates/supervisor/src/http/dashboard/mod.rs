//! The live dashboard and its origin. The page (embedded in the binary,
//! `assets`) reads the public management routes and, with the admin token,
//! follows logs and acts on agents. It is served on the admin port only
//! (`listener`), an origin no agent is served from, behind the rules that
//! keep other origins out (`guard`); `/supervisor/ui` on the main port,
//! where agents' pages live, is a notice that says where it is (`notice`).

mod assets;
mod guard;
mod listener;
mod notice;

pub use assets::router;
pub use listener::{admin_router, main_router, AdminListener};
