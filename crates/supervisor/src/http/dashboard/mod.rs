//! The live dashboard at `/supervisor/ui`: a static page (embedded in the
//! binary) that reads the public management routes and, with the admin token,
//! follows logs and acts on agents.

mod assets;

pub use assets::router;
