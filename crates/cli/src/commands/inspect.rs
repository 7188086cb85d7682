//! `par inspect FILE.apkg`: print the manifest and the surfaces it declares.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use par_package::{Manifest, PackageInfo};
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// An .apkg file or a source folder.
    pub package: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    // Read-only: the archive is inspected in place, nothing goes to the cache.
    let info = par_package::inspect(&args.package)
        .with_context(|| format!("failed to inspect {}", args.package.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&info))?);
    } else {
        print!("{}", to_text(&info));
    }
    Ok(())
}

fn entry(e: &Option<par_package::manifest::EntryRef>) -> serde_json::Value {
    e.as_ref()
        .map(|e| json!(e.to_string()))
        .unwrap_or(serde_json::Value::Null)
}

fn to_json(info: &PackageInfo) -> serde_json::Value {
    let m = &info.manifest;
    json!({
        "name": m.name,
        "package_id": m.package_id(),
        "version": m.agent_version(),
        "sha256": info.sha256,
        "archive_bytes": info.archive_bytes,
        "entries": info.entries,
        "runtime": m.runtime,
        "entrypoint": entry(&m.entrypoint),
        "surfaces": m.surfaces(),
        "rest": m.rest.as_ref().map(|r| r.entry.to_string()),
        "a2a": m.a2a.as_ref().map(|a| json!({
            "entry": entry(&a.entry),
            "http_server": entry(&a.http_server),
        })),
        "ui": m.ui.as_ref().map(|u| json!({"path": u.path, "base_path": u.base_path})),
        "http_server": entry(&m.http_server),
        "exports": m.metadata.sub_agents,
        "capabilities": m.capabilities,
        "dependencies": m.dependencies,
        "requirements_txt": info.requirements_txt,
        "environment_keys": m.environment.keys().collect::<Vec<_>>(),
        "warnings": m.warnings,
        "manifest": m,
    })
}

fn surfaces_line(m: &Manifest) -> String {
    let s = m.surfaces();
    let names: Vec<&str> = [
        (s.invoke, "invoke"),
        (s.rest, "rest"),
        (s.a2a, "a2a"),
        (s.ui, "ui"),
        (s.http_server, "http_server"),
    ]
    .into_iter()
    .filter_map(|(on, n)| on.then_some(n))
    .collect();
    names.join(", ")
}

fn to_text(info: &PackageInfo) -> String {
    let m = &info.manifest;
    let mut o = String::new();
    let none = "-".to_string();
    let _ = writeln!(o, "name:         {}", m.name);
    let _ = writeln!(o, "package id:   {}", m.package_id());
    if let Some(d) = &m.display_name {
        let _ = writeln!(o, "display name: {d}");
    }
    if let Some(d) = &m.description {
        let _ = writeln!(o, "description:  {d}");
    }
    let _ = writeln!(o, "sha256:       {}", info.sha256);
    let _ = writeln!(
        o,
        "archive:      {} bytes, {} entries",
        info.archive_bytes, info.entries
    );
    let _ = writeln!(o, "runtime:      {}", m.runtime);
    let _ = writeln!(
        o,
        "entrypoint:   {}",
        m.entrypoint
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or(none.clone())
    );
    let _ = writeln!(o, "surfaces:     {}", surfaces_line(m));
    if let Some(r) = &m.rest {
        let _ = writeln!(o, "  rest:        {}", r.entry);
    }
    if let Some(a) = &m.a2a {
        let _ = writeln!(
            o,
            "  a2a:         {}",
            a.entry
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or(none.clone())
        );
        if let Some(h) = &a.http_server {
            let _ = writeln!(o, "  a2a http:    {h}");
        }
    }
    if let Some(u) = &m.ui {
        let _ = writeln!(o, "  ui:          {} at {}", u.path, u.base_path);
    }
    if let Some(h) = &m.http_server {
        let _ = writeln!(o, "  http_server: {h}");
    }
    if !m.metadata.sub_agents.is_empty() {
        let _ = writeln!(o, "exports:");
        for s in &m.metadata.sub_agents {
            let _ = writeln!(
                o,
                "  {} ({}){}",
                s.name,
                if s.public { "public" } else { "private" },
                s.description
                    .as_ref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            );
        }
    }
    if !m.capabilities.is_empty() {
        let _ = writeln!(o, "capabilities: {}", m.capabilities.join(", "));
    }
    let deps: &[String] = info.requirements_txt.as_deref().unwrap_or(&m.dependencies);
    let from = if info.requirements_txt.is_some() {
        "requirements.txt"
    } else {
        "agent.yaml"
    };
    if deps.is_empty() {
        let _ = writeln!(o, "dependencies: none");
    } else {
        let _ = writeln!(o, "dependencies ({from}):");
        for d in deps {
            let _ = writeln!(o, "  {d}");
        }
    }
    if !m.environment.is_empty() {
        // Keys only: values may be secrets.
        let keys: Vec<&str> = m.environment.keys().map(String::as_str).collect();
        let _ = writeln!(o, "environment:  {}", keys.join(", "));
    }
    for w in &m.warnings {
        let _ = writeln!(o, "warning:      {w}");
    }
    o
}
