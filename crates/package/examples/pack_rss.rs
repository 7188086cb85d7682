//! Peak memory of loading (packing) a large folder package.
//!
//! `cargo run --release -p par-package --example pack_rss -- [MB] [load|pack]`
//! makes a folder of MB megabytes of incompressible files (default 300) in a
//! temp folder, loads it as the worker does (or packs it to an .apkg) and
//! prints the process's peak resident memory (`VmHWM`) before and after.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

fn vm_hwm_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Writes `mb` MiB of xorshift noise to `path`, 1 MiB at a time.
fn noise_file(path: &Path, mb: usize, seed: u64) {
    let mut f = fs::File::create(path).unwrap();
    let mut x = seed | 1;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mb {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        f.write_all(&buf).unwrap();
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let total_mb: usize = args.next().map(|a| a.parse().unwrap()).unwrap_or(300);
    let mode = args.next().unwrap_or_else(|| "load".into());
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("agent");
    fs::create_dir_all(dir.join("data")).unwrap();
    fs::write(
        dir.join("agent.yaml"),
        "name: big-agent\nentrypoint: main:handler\n",
    )
    .unwrap();
    fs::write(dir.join("main.py"), "def handler(ctx):\n    return ctx\n").unwrap();
    let per_file = 50;
    let mut left = total_mb;
    let mut i = 0;
    while left > 0 {
        let mb = left.min(per_file);
        noise_file(
            &dir.join(format!("data/blob{i:02}.bin")),
            mb,
            0x9E37_79B9 + i as u64,
        );
        left -= mb;
        i += 1;
    }
    let before = vm_hwm_kib();
    let started = Instant::now();
    match mode.as_str() {
        "pack" => {
            let out = work.path().join("out.apkg");
            let s = par_package::pack(&dir, &out).unwrap();
            println!("packed {} entries, {} bytes", s.entries, s.bytes);
        }
        _ => {
            let opts = par_package::LoadOptions::default().with_home(work.path().join("home"));
            let pkg = par_package::load(&dir, &opts).unwrap();
            println!("loaded {} into {}", pkg.package_id(), pkg.root.display());
        }
    }
    println!(
        "{mode} of a {total_mb} MiB folder: {:.1}s, VmHWM before {} MiB, after {} MiB",
        started.elapsed().as_secs_f64(),
        before / 1024,
        vm_hwm_kib() / 1024
    );
}
