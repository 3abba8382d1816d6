//! The watcher's change detection on real files: debounce, ConfigMap link swaps, include matches
//! added and removed, broken files not read again until they change.

use std::os::unix::fs::symlink;
use std::path::Path;

use super::*;

const SETTLE: Duration = Duration::from_millis(500);

fn at(start: Instant, millis: u64) -> Instant {
    start + Duration::from_millis(millis)
}

fn routes(service: &str, paths: &[&str]) -> String {
    let routes: String = paths
        .iter()
        .map(|path| format!("  - path: {path}\n    auth: none\n"))
        .collect();
    format!("service: {service}\nupstreams: [http://127.0.0.1:1]\nroutes:\n{routes}")
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Lays out `files` the way the kubelet writes a ConfigMap volume: the files in a new
/// timestamped folder, `..data` renamed over to point at it, and each top-level name a link
/// through `..data`; the previous folder is removed.
fn configmap_update(dir: &Path, generation: u32, files: &[(&str, &str)]) {
    let version = format!("..2026_12_06_19_00_00.{generation}");
    for (name, text) in files {
        write(&dir.join(&version).join(name), text);
    }
    let previous = std::fs::read_link(dir.join("..data")).ok();
    symlink(&version, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    for (name, _) in files {
        let top = Path::new(name).components().next().unwrap().as_os_str();
        let link = dir.join(top);
        if link.symlink_metadata().is_err() {
            symlink(Path::new("..data").join(top), link).unwrap();
        }
    }
    if let Some(previous) = previous {
        std::fs::remove_dir_all(dir.join(previous)).unwrap();
    }
}

fn files_of(gateway: &Path) -> Fingerprint {
    let config = crate::config::load(gateway).unwrap();
    Fingerprint::of(config.files())
}

#[test]
fn a_burst_of_changes_gives_one_reload_once_it_has_settled() {
    let start = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.yaml");
    write(&file, "a");
    let mut debounce = Debounce::new(Fingerprint::of([file.clone()]), SETTLE);
    assert_eq!(
        debounce.observe(at(start, 0), Fingerprint::of([file.clone()])),
        Step::Quiet
    );

    // An editor's save in steps, or a file written in pieces: each look sees it change.
    let mut steps = Vec::new();
    for (millis, text) in [(100, "ab"), (200, "abc"), (300, "abcd")] {
        write(&file, text);
        steps.push(debounce.observe(at(start, millis), Fingerprint::of([file.clone()])));
    }
    assert_eq!(steps, [Step::Settling, Step::Settling, Step::Settling]);
    // Unchanged, but not yet for 500 ms since the last change.
    let still = Fingerprint::of([file.clone()]);
    assert_eq!(
        debounce.observe(at(start, 700), still.clone()),
        Step::Settling
    );
    assert_eq!(
        debounce.observe(at(start, 800), still.clone()),
        Step::Reload(vec![file.clone()])
    );
    assert_eq!(debounce.applied(), &still);
    assert_eq!(debounce.observe(at(start, 900), still.clone()), Step::Quiet);
    assert_eq!(debounce.observe(at(start, 5000), still), Step::Quiet);
}

#[test]
fn a_change_undone_before_it_settles_reloads_nothing() {
    let start = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (gateway, spare) = (dir.path().join("gateway.yaml"), dir.path().join("spare"));
    write(&gateway, "a");
    let before = Fingerprint::of([gateway.clone()]);
    let mut debounce = Debounce::new(before.clone(), SETTLE);
    // Another file appears (a new include match) and goes again.
    write(&spare, "b");
    let with_spare = Fingerprint::of([gateway.clone(), spare.clone()]);
    assert_eq!(debounce.observe(at(start, 0), with_spare), Step::Settling);
    std::fs::remove_file(&spare).unwrap();
    assert_eq!(
        debounce.observe(at(start, 200), before.clone()),
        Step::Quiet
    );
    assert_eq!(debounce.observe(at(start, 2000), before), Step::Quiet);
}

#[test]
fn files_that_were_given_to_a_reload_are_not_read_again_until_they_change() {
    // A broken file: the reload fails, and the same broken file is not read every second.
    let start = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.yaml");
    write(&file, "good");
    let mut debounce = Debounce::new(Fingerprint::of([file.clone()]), SETTLE);
    write(&file, "broken: [");
    let broken = Fingerprint::of([file.clone()]);
    assert_eq!(
        debounce.observe(at(start, 0), broken.clone()),
        Step::Settling
    );
    assert_eq!(
        debounce.observe(at(start, 600), broken.clone()),
        Step::Reload(vec![file.clone()])
    );
    assert_eq!(debounce.observe(at(start, 1600), broken), Step::Quiet);
    // The fix is a change like any other.
    write(&file, "fixed: [1]");
    let fixed = Fingerprint::of([file.clone()]);
    assert_eq!(
        debounce.observe(at(start, 2600), fixed.clone()),
        Step::Settling
    );
    assert_eq!(
        debounce.observe(at(start, 3100), fixed),
        Step::Reload(vec![file])
    );
}

#[test]
fn routes_files_added_or_removed_under_an_include_pattern_are_changes() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = dir.path().join("gateway.yaml");
    write(&gateway, "include: [routes/*.yaml]\n");
    let courses = dir.path().join("routes/courses.yaml");
    write(&courses, &routes("courses", &["/api/courses/"]));
    let config = crate::config::load(&gateway).unwrap();
    assert_eq!(config.files(), [gateway.clone(), courses.clone()]);
    let before = Fingerprint::of(config.files());

    // The running configuration's patterns are globbed again on each look.
    let accounts = dir.path().join("routes/accounts.yaml");
    write(&accounts, &routes("accounts", &["/api/accounts/"]));
    let added = Fingerprint::of(config.files());
    assert_eq!(before.differences(&added), [accounts]);

    std::fs::remove_file(&courses).unwrap();
    let removed = Fingerprint::of(config.files());
    assert_eq!(added.differences(&removed), [courses]);
    // A file that does not match the patterns is no part of the configuration.
    write(&dir.path().join("routes/notes.txt"), "todo");
    assert_eq!(Fingerprint::of(config.files()), removed);
}

#[test]
fn a_file_written_in_place_is_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = dir.path().join("gateway.yaml");
    write(&gateway, "include: [routes/*.yaml]\n");
    let courses = dir.path().join("routes/courses.yaml");
    write(&courses, &routes("courses", &["/api/courses/"]));
    let before = files_of(&gateway);
    write(
        &courses,
        &routes("courses", &["/api/courses/", "/api/lessons/"]),
    );
    assert_eq!(before.differences(&files_of(&gateway)), [courses]);
}

#[test]
fn a_configmap_update_swapping_the_data_link_is_a_change_of_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let gateway_text = "include: [routes/*.yaml]\n";
    let courses = routes("courses", &["/api/courses/"]);
    configmap_update(
        dir.path(),
        1,
        &[
            ("gateway.yaml", gateway_text),
            ("routes/courses.yaml", &courses),
        ],
    );
    let gateway = dir.path().join("gateway.yaml");
    assert!(gateway.symlink_metadata().unwrap().is_symlink());
    let before = files_of(&gateway);
    assert_eq!(before, files_of(&gateway), "looking changes nothing");

    // The same names, the same sizes, even the same text: the files behind the links are new.
    configmap_update(
        dir.path(),
        2,
        &[
            ("gateway.yaml", gateway_text),
            ("routes/courses.yaml", &courses),
        ],
    );
    let after = files_of(&gateway);
    assert_eq!(
        before.differences(&after),
        [gateway.clone(), dir.path().join("routes/courses.yaml")]
    );

    // A swap that brings a routes file more.
    configmap_update(
        dir.path(),
        3,
        &[
            ("gateway.yaml", gateway_text),
            ("routes/courses.yaml", &courses),
            (
                "routes/accounts.yaml",
                &routes("accounts", &["/api/accounts/"]),
            ),
        ],
    );
    let config = crate::config::load(&gateway).unwrap();
    assert_eq!(config.routes.len(), 2);
    assert!(after
        .differences(&Fingerprint::of(config.files()))
        .contains(&dir.path().join("routes/accounts.yaml")));
}

#[test]
fn a_file_that_cannot_be_looked_at_is_stamped_as_missing() {
    let dir = tempfile::tempdir().unwrap();
    let dangling = dir.path().join("gateway.yaml");
    symlink(dir.path().join("..data/gateway.yaml"), &dangling).unwrap();
    let missing = Fingerprint::of([dangling.clone()]);
    assert_eq!(missing.0.get(&dangling), Some(&None));
    write(
        &dir.path().join("..data/gateway.yaml"),
        "listen: 127.0.0.1:1\n",
    );
    assert_eq!(
        missing.differences(&Fingerprint::of([dangling.clone()])),
        [dangling]
    );
}
