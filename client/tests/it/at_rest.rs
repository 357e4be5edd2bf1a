//! Files on disk, issue 8 ("secure links", at rest and downloads on disk): a download never
//! writes through, truncates or deletes a `.part` it did not create, never replaces a file
//! at its destination, and the tracker's and the client's own directories are private.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use crate::support::{assert_same_file, write_random, ClientProc, Cluster};

const VICTIM: &[u8] = b"ssh-ed25519 AAAA... the victim's own line\n";

fn upload(c: &mut ClientProc, path: &Path) {
    let line = c.run1(&format!("upload_file '{}' g", path.display()));
    assert!(line.starts_with("uploaded ") || line.starts_with("sharing "), "{line}");
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
}

fn part_exists_error(part: &Path) -> String {
    format!(
        "{} already exists and is not a download of this client; remove it or choose another \
         destination",
        part.display()
    )
}

/// Issue 8: a symlink planted at `<dest>.part` made a download overwrite its target.
#[test]
fn a_planted_part_symlink_is_not_followed() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["seed", "leech"], &[]);
    write_random(&cluster.path("f.bin"), 700_000, 31);
    upload(&mut c[0], &cluster.path("f.bin"));
    let victim = cluster.path("authorized_keys");
    std::fs::write(&victim, VICTIM).unwrap();
    let out = cluster.path("out");
    std::fs::create_dir(&out).unwrap();
    let part = out.join("f.bin.part");
    symlink(&victim, &part).unwrap();

    c[1].err(&format!("download_file g f.bin {}", out.display()), &part_exists_error(&part));
    assert_eq!(std::fs::read(&victim).unwrap(), VICTIM);
    assert_eq!(std::fs::read_link(&part).unwrap(), victim);
    assert!(!out.join("f.bin").exists());

    // A dangling link is not followed either: nothing is created at its target.
    let planted = cluster.path("created-through-the-link");
    let dest = cluster.path("other.bin");
    let part = cluster.path("other.bin.part");
    symlink(&planted, &part).unwrap();
    c[1].err(&format!("download_file g f.bin {}", dest.display()), &part_exists_error(&part));
    assert!(planted.symlink_metadata().is_err());
    assert!(c[1].run("show_downloads").is_empty());
}

/// Issue 8: an existing `.part` of someone else's was truncated, then deleted.
#[test]
fn someone_elses_part_file_is_neither_truncated_nor_deleted() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["seed", "leech"], &[]);
    write_random(&cluster.path("f.bin"), 700_000, 32);
    upload(&mut c[0], &cluster.path("f.bin"));
    let dest = cluster.path("out.bin");
    let part = cluster.path("out.bin.part");
    std::fs::write(&part, b"half of another program's download").unwrap();

    c[1].err(&format!("download_file g f.bin {}", dest.display()), &part_exists_error(&part));
    assert_eq!(std::fs::read(&part).unwrap(), b"half of another program's download");
    assert!(!dest.exists());
    assert!(c[1].run("show_downloads").is_empty());
}

/// A file that appears at the destination while the download runs is not replaced; the
/// verified file stays at the `.part` path, which the failure names.
#[test]
fn a_destination_that_appears_during_the_download_is_not_replaced() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    // At 1 MB/s, 4 MiB take about 4 s: the destination is created well before the end.
    let mut c = cluster.members(&["seed", "leech"], &["--max-upload-rate", "1000000"]);
    let original = cluster.path("f.bin");
    write_random(&original, 4 * 1024 * 1024, 33);
    upload(&mut c[0], &original);
    let dest = cluster.path("out.bin");
    let part = cluster.path("out.bin.part");
    c[1].ok(
        &format!("download_file g f.bin {}", dest.display()),
        &format!("downloading f.bin from group g to {}", dest.display()),
    );
    std::fs::write(&dest, b"written meanwhile").unwrap();

    let done = c[1].wait_downloads();
    assert_eq!(
        done,
        [format!(
            "[F] [g] f.bin: {} appeared during the download and was not replaced; the \
             downloaded file is at {}",
            dest.display(),
            part.display()
        )]
    );
    assert_eq!(std::fs::read(&dest).unwrap(), b"written meanwhile");
    assert_same_file(&original, &part);

    // A destination that exists before the download is refused at once, as before.
    c[1].err(
        &format!("download_file g f.bin {}", dest.display()),
        &format!("{} already exists; remove it or choose another destination", dest.display()),
    );
    assert_eq!(std::fs::read(&dest).unwrap(), b"written meanwhile");
}

/// Resuming opens the saved `.part` without following a link put in its place.
#[test]
fn a_resumed_download_does_not_follow_a_part_replaced_by_a_symlink() {
    let (cluster, _tracker) = Cluster::with_one_tracker();
    let mut c = cluster.members(&["seed", "leech"], &["--max-upload-rate", "2000000"]);
    let original = cluster.path("f.bin");
    write_random(&original, 8 * 1024 * 1024, 34);
    upload(&mut c[0], &original);
    let dest = cluster.path("out.bin");
    let part = cluster.path("out.bin.part");
    // The download is saved as soon as it starts; at 2 MB/s it runs for about 4 s.
    c[1].run1(&format!("download_file g f.bin {}", dest.display()));
    let line = c[1].run1("show_downloads");
    assert!(line.starts_with("[D]"), "{line}");
    c[1].kill();
    let victim = cluster.path("authorized_keys");
    std::fs::write(&victim, VICTIM).unwrap();
    std::fs::remove_file(&part).unwrap();
    symlink(&victim, &part).unwrap();

    let mut leech = cluster.client("leech");
    leech.resumed("leech");
    let done = leech.wait_downloads();
    assert_eq!(
        done,
        [format!("[F] [g] f.bin: cannot resume: {} is not a regular file", part.display())]
    );
    assert_eq!(std::fs::read(&victim).unwrap(), VICTIM);
    assert_eq!(std::fs::read_link(&part).unwrap(), victim);
    assert!(!dest.exists());
}

/// Asserts `dir` is 0700 and every file in it 0600; returns the file names.
#[track_caller]
fn assert_private(dir: &Path) -> Vec<String> {
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        // Regular files, and the client's control socket (`client --attach`).
        let kind = path.symlink_metadata().unwrap().file_type();
        use std::os::unix::fs::FileTypeExt;
        assert!(kind.is_file() || kind.is_socket(), "{}", path.display());
        assert_eq!(mode(&path), 0o600, "{}", path.display());
        names.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    names.sort();
    names
}

/// Issue 8: the data directory was 0755 and the database 0644.
#[test]
fn data_and_state_directories_and_their_files_are_private() {
    let cluster = Cluster::new(1);
    // Directories left by an older version, readable by everyone.
    let data_dir = cluster.path("tracker-1");
    let state_dir = cluster.path("alice");
    for dir in [&data_dir, &state_dir] {
        std::fs::create_dir(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let history = state_dir.join("history.txt");
    std::fs::write(&history, b"list_groups\n").unwrap();
    std::fs::set_permissions(&history, std::fs::Permissions::from_mode(0o644)).unwrap();

    let _tracker = cluster.try_start_tracker(1, &[]).expect("tracker did not start");
    let mut alice = cluster.client("alice");
    alice.sign_up("alice");
    alice.ok("create_group g", "created group g");
    write_random(&cluster.path("f.bin"), 1000, 35);
    upload(&mut alice, &cluster.path("f.bin"));

    let names = assert_private(&data_dir);
    assert_eq!(
        names,
        ["tracker.key", "tracker.sqlite3", "tracker.sqlite3-shm", "tracker.sqlite3-wal"]
    );
    assert!(cluster.tracker_log(1).contains("had mode 0755; set to 0700"));
    let names = assert_private(&state_dir);
    assert_eq!(
        names,
        ["client.key", "control.sock", "history.txt", "listen", "lock", "session", "shares.bin"]
    );
    let log = std::fs::read_to_string(cluster.path("alice.log")).unwrap();
    assert!(log.contains("had mode 0755; set to 0700"), "{log}");
}
