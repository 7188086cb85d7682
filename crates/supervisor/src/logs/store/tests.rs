use super::*;

fn limits(lines: usize) -> Limits {
    Limits {
        lines_per_process: lines,
        ..Limits::default()
    }
}

#[tokio::test]
async fn ring_is_bounded_and_filters_work() {
    let store = LogStore::new(limits(3), false);
    for i in 0..5 {
        store.push("a", "par-a", "stdout", &format!("line {i}"));
    }
    store.push("b", "par-b", "stderr", "boom");
    let all = store.query(&Filter::default());
    assert_eq!(
        all.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
        ["line 2", "line 3", "line 4", "boom"]
    );
    let f = Filter {
        process_id: Some("par-b".into()),
        ..Default::default()
    };
    assert_eq!(store.query(&f).len(), 1);
    let f = Filter {
        level: Some(Level::Error),
        ..Default::default()
    };
    assert_eq!(store.query(&f)[0].agent_id, "b");
    let f = Filter {
        limit: Some(1),
        ..Default::default()
    };
    assert_eq!(store.query(&f)[0].message, "boom");
    assert_eq!(
        store.last_errors_since("par-b", 5, SystemTime::UNIX_EPOCH),
        ["boom"]
    );
    assert_eq!(store.clear(None), 4);
    assert_eq!(store.bytes(), 0);
}

#[test]
fn last_errors_keep_the_structured_cause_and_honour_since() {
    let store = LogStore::new(limits(10), false);
    let line = r#"{"level":"ERROR","message":"agent failed","error":"invalid manifest\n  - version: expected a string"}"#;
    store.push("a", "par-a", "stdout", line);
    assert_eq!(
        store.last_errors_since("par-a", 5, SystemTime::UNIX_EPOCH),
        ["agent failed: invalid manifest   - version: expected a string"]
    );
    let later = SystemTime::now() + std::time::Duration::from_secs(60);
    assert!(store.last_errors_since("par-a", 5, later).is_empty());
}

#[test]
fn an_entry_is_a_line_of_the_one_schema() {
    let store = LogStore::new(limits(10), false);
    store.push(
        "a",
        "par-a",
        "stderr",
        r#"{"levelname":"WARNING","msg":"slow","ms":3}"#,
    );
    store.push("a", "par-a", "stdout", "plain");
    store.record("a", Level::Info, "started".into(), None);
    let got: Vec<Value> = store
        .query(&Filter::default())
        .iter()
        .map(|e| serde_json::to_value(&**e).unwrap())
        .collect();
    let mut want: Vec<&str> = par_telemetry::logging::REQUIRED_KEYS.to_vec();
    want.extend(["seq", "stream"]);
    want.sort_unstable();
    for v in &got {
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, want, "{v}");
        assert!(v["fields"].is_object(), "{v}");
        assert_eq!(
            (&v["agent_id"], &v["process_id"]),
            (&Value::from("a"), &Value::from("par-a"))
        );
    }
    assert_eq!(
        (&got[0]["level"], &got[0]["source"]),
        (&Value::from("warn"), &Value::from("agent"))
    );
    assert_eq!(got[0]["fields"]["ms"], 3);
    assert_eq!(got[1]["fields"], serde_json::json!({}));
    assert_eq!(
        (&got[2]["source"], &got[2]["stream"]),
        (&Value::from("supervisor"), &Value::from("supervisor"))
    );
}

/// A 16 KiB JSON line of 1,424 keys, as a hostile agent prints it.
fn wide_line(i: usize) -> String {
    let mut line = format!(r#"{{"level":"info","message":"wide {i}""#);
    let mut k = 0;
    while line.len() < 16 * 1024 - 20 {
        line.push_str(&format!(",\"k{k:04}\":\"v\""));
        k += 1;
    }
    line.push('}');
    line
}

#[test]
fn rings_are_bounded_in_bytes_per_process_and_in_all() {
    let l = Limits {
        lines_per_process: 100_000,
        bytes_per_process: 256 << 10,
        bytes_total: 600 << 10,
        ..Limits::default()
    };
    let store = LogStore::new(l, false);
    for i in 0..2000 {
        store.push("a", "par-a", "stdout", &wide_line(i));
        store.push("a", "par-a", "stderr", &"x".repeat(40_000));
    }
    let kept = store.query(&Filter::default());
    let bytes = store.bytes();
    assert!(bytes <= 256 << 10, "{bytes}");
    assert!(kept.len() > 10, "{}", kept.len());
    let last = kept.last().unwrap();
    assert_eq!(last.line_bytes, Some(40_000));
    let wide = &kept[kept.len() - 2];
    assert_eq!(wide.message, "wide 1999");
    assert_eq!(wide.fields.as_ref().unwrap().len(), 64);
    assert!(wide.fields_dropped > 1000, "{}", wide.fields_dropped);
    // Three noisy processes and a quiet one: the total holds, and the
    // quiet one keeps its lines.
    store.push("q", "par-q", "stdout", "quiet and kept");
    for p in ["par-b", "par-c", "par-d"] {
        for i in 0..200 {
            store.push("b", p, "stdout", &wide_line(i));
        }
    }
    assert!(store.bytes() <= 600 << 10, "{}", store.bytes());
    let f = Filter {
        process_id: Some("par-q".into()),
        ..Default::default()
    };
    assert_eq!(store.query(&f).len(), 1);
    assert!(store.counters.evicted_for_bytes.load(Ordering::Relaxed) > 0);
    assert_eq!(store.counters.lines_cut.load(Ordering::Relaxed), 2000);
    let text = store.metrics_text();
    assert!(text.contains("par_log_lines_cut_total 2000"), "{text}");
}
