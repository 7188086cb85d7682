//! Size limits of a manifest and of its fields (bytes of UTF-8, counts of
//! items): what is over one is refused with an error naming the field and
//! the limit. They keep every reply that shows a manifest small.

/// The whole `agent.yaml`.
pub const MAX_MANIFEST_BYTES: usize = 256 * 1024;
/// `description`, `metadata.sub_agents[].description`.
pub const MAX_DESCRIPTION_BYTES: usize = 4096;
/// Names and short text: `name`, `version`, `display_name`, `author`,
/// `license`, `runtime`, `metadata.version`, sub-agent names, each tag
/// and capability, environment variable names.
pub const MAX_NAME_BYTES: usize = 256;
/// `metadata.homepage`, `metadata.repository`.
pub const MAX_URL_BYTES: usize = 2048;
/// `module:function` references (`entrypoint`, `a2a.*`, `rest.entry`, `http_server`).
pub const MAX_REF_BYTES: usize = 512;
/// `ui.path`, `ui.basePath`.
pub const MAX_PATH_BYTES: usize = 1024;
/// Each of `dependencies`.
pub const MAX_DEPENDENCY_BYTES: usize = 1024;
/// Items of `dependencies`.
pub const MAX_DEPENDENCIES: usize = 500;
/// Items of `metadata.tags` and of `capabilities`.
pub const MAX_LIST_ITEMS: usize = 100;
/// Items of `metadata.sub_agents` (the agent's exports).
pub const MAX_SUB_AGENTS: usize = 100;
/// Variables of `environment`.
pub const MAX_ENV_VARS: usize = 1000;
/// Each value of `environment`.
pub const MAX_ENV_VALUE_BYTES: usize = 32 * 1024;
/// Warnings kept (unknown keys and the like); the rest are counted.
pub const MAX_WARNINGS: usize = 50;
