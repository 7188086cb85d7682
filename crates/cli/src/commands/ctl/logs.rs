//! `par ctl logs`: an agent's recent log lines, or (`-f`) the live stream
//! (SSE from `/supervisor/logs?follow=true`) until Ctrl-C, which ends it
//! cleanly with exit code 0.

use clap::Args;
use futures_util::StreamExt as _;
use serde_json::Value;

use super::client::{str_field, Api, CtlError};
use super::table::{paint, Out};
use super::LevelArg;

#[derive(Args)]
pub struct LogsArgs {
    /// Agent id (or its process id, par-ID).
    agent: String,
    /// Keep printing new lines until Ctrl-C.
    #[arg(short, long)]
    follow: bool,
    /// Lowest level shown.
    #[arg(long, value_enum)]
    level: Option<LevelArg>,
    /// How many recent lines (before following).
    #[arg(short = 'n', long, default_value_t = 100)]
    lines: usize,
    /// Only lines since: RFC 3339, Unix seconds, or a duration ago (5m).
    #[arg(long)]
    since: Option<String>,
    /// One JSON object per line, as the supervisor keeps them.
    #[arg(long)]
    json: bool,
}

fn level_color(level: &str) -> &'static str {
    match level {
        "error" => "31",
        "warn" => "33",
        "debug" | "trace" => "2",
        _ => "32",
    }
}

fn render(e: &Value, json: bool, color: bool) -> String {
    if json {
        return e.to_string();
    }
    let level = str_field(e, "level");
    let mut line = format!(
        "{} {} {} {:<10} {}",
        str_field(e, "timestamp"),
        paint(
            &format!("{:<5}", level.to_uppercase()),
            level_color(&level),
            color
        ),
        str_field(e, "process_id"),
        str_field(e, "stream"),
        str_field(e, "message"),
    );
    if let Some(f) = e
        .get("fields")
        .filter(|f| f.as_object().is_some_and(|o| !o.is_empty()))
    {
        line.push(' ');
        line.push_str(&paint(&f.to_string(), "2", color));
    }
    line
}

pub async fn run(api: &Api, a: LogsArgs) -> anyhow::Result<()> {
    // Caught from the start, so that Ctrl-C at any moment ends with 0.
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let p = api.agent(&a.agent).await?;
    let id = p.agent_id;
    let mut url = url::Url::parse("http://x/supervisor/logs")?;
    {
        let mut q = url.query_pairs_mut();
        // The supervisor matches an agent id against every process of the agent.
        q.append_pair("process_id", &id);
        q.append_pair("limit", &a.lines.to_string());
        if let Some(l) = a.level {
            q.append_pair("level", l.as_str());
        }
        if let Some(s) = &a.since {
            q.append_pair("since", s);
        }
        if a.follow {
            q.append_pair("follow", "true");
        }
    }
    let path = format!("{}?{}", url.path(), url.query().unwrap_or(""));
    let mut out = Out::stdout();
    let color = out.color();
    if !a.follow {
        let body = api.get_json(&path).await?;
        for e in body["logs"].as_array().into_iter().flatten() {
            out.line(&render(e, a.json, color))?;
        }
        return Ok(());
    }
    let resp = api.send_raw("GET", &path, None, None).await?;
    let mut stream = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        tokio::select! {
            _ = sigint.recv() => return Ok(()),
            chunk = stream.next() => match chunk {
                Some(Ok(bytes)) => {
                    buf.extend_from_slice(&bytes);
                    while let Some(end) = find_event_end(&buf) {
                        let event: Vec<u8> = buf.drain(..end.0 + end.1).collect();
                        if let Some(data) = event_data(&event[..end.0]) {
                            if let Ok(e) = serde_json::from_str::<Value>(&data) {
                                out.line(&render(&e, a.json, color))?;
                            }
                        }
                    }
                }
                Some(Err(e)) => {
                    return Err(CtlError::Unreachable {
                        url: api.base().to_string(),
                        reason: format!("the log stream broke: {e}"),
                    }
                    .into())
                }
                None => {
                    eprintln!("par ctl: the supervisor closed the log stream");
                    return Ok(());
                }
            }
        }
    }
}

/// Where the first SSE event ends: (its length, the length of the blank line after it).
fn find_event_end(buf: &[u8]) -> Option<(usize, usize)> {
    (0..buf.len()).find_map(|i| {
        if buf[i..].starts_with(b"\n\n") {
            Some((i, 2))
        } else if buf[i..].starts_with(b"\r\n\r\n") {
            Some((i, 4))
        } else {
            None
        }
    })
}

/// The `data:` of one event (lines joined), or None for a comment.
fn event_data(event: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(event);
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    (!data.is_empty()).then(|| data.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_are_split_and_comments_skipped() {
        let buf = b": keep-alive\n\nid: 3\nevent: log\ndata: {\"a\":1}\n\nid: 4\r\ndata: x\r\n\r\npartial";
        let (n, sep) = find_event_end(buf).unwrap();
        assert_eq!(event_data(&buf[..n]), None);
        let rest = &buf[n + sep..];
        let (n, sep) = find_event_end(rest).unwrap();
        assert_eq!(event_data(&rest[..n]).as_deref(), Some("{\"a\":1}"));
        let rest = &rest[n + sep..];
        let (n, sep) = find_event_end(rest).unwrap();
        assert_eq!(event_data(&rest[..n]).as_deref(), Some("x"));
        assert!(find_event_end(&rest[n + sep..]).is_none());
    }
}
