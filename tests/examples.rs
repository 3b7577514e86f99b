//! The application example (`examples/app_detections.rs`) runs as documented: one line per
//! frame with the detections and their track ids, and a clear error for a missing file.

use std::path::PathBuf;
use std::process::Command;

/// The example's binary, built beside the test binaries (`cargo test` and `cargo build
/// --all-targets` build it).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let p = dir.join("examples").join(name);
    assert!(
        p.is_file(),
        "{} is not built: run `cargo build --examples` (in the tests' profile) first",
        p.display()
    );
    p
}

/// Runs the example on the sample clip with `args` after the clip; returns what it printed,
/// having checked that it succeeded.
fn app_on_clip(args: &[&str]) -> String {
    let video = gstregiondrop::analyzer::default_video_path();
    let out = Command::new(example("app_detections"))
        .arg(&video)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn app_example_prints_tracked_detections_per_frame() {
    let stdout = app_on_clip(&["6"]);
    let frames: Vec<&str> = stdout.lines().filter(|l| l.starts_with("frame ")).collect();
    assert_eq!(frames.len(), 6, "{stdout}");
    for (i, line) in frames.iter().enumerate() {
        assert!(line.starts_with(&format!("frame {i}: ")), "{line}");
        // Every detection of the clip's frames carries a track id: "person #1 0.85 [...]".
        let listed = line.split(" detections: ").nth(1).unwrap_or("");
        assert!(
            !listed.is_empty(),
            "no detections on a frame with people: {line}"
        );
        assert!(listed.split("], ").all(|d| d.contains(" #")), "{line}");
    }
}

/// Errors end the example with GStreamer's message: one while the pipeline starts (a missing
/// file), one while it plays (a file that is not video, found by decodebin's type finding).
#[test]
fn app_example_names_the_error() {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    for (file, needle) in [
        ("/nonexistent/clip.avi", "/nonexistent/clip.avi"),
        (manifest, "text file"),
    ] {
        let out = Command::new(example("app_detections"))
            .args([file, "3"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file}: {stderr}");
        assert!(stderr.contains(needle), "{file}: {stderr}");
    }
}

/// With a line, the example prints the element's crossing messages: people walking across the
/// sample clip's plaza in its first 70 frames.
#[test]
fn app_example_prints_line_crossings() {
    let stdout = app_on_clip(&["70", "400,100,400,450"]);
    let crossings: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("crossing: "))
        .collect();
    assert!(!crossings.is_empty(), "{stdout}");
    for c in crossings {
        assert!(c.contains(" line 0 ") && c.ends_with(" s"), "{c}");
        assert!(c.contains(" forward ") || c.contains(" backward "), "{c}");
    }
}
