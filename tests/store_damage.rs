//! A damaged or empty store file: the server refuses it with a clear error naming the way
//! out (restore a backup), never panics while reading it and never overwrites it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::io::{Seek, SeekFrom, Write};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::Duration;
use switchboard::store::{Store, StoreError};

/// A store file holding a few chats, its server stopped; returns the directory and the path.
async fn populated_store() -> (std::sync::Arc<tempfile::TempDir>, PathBuf) {
    let mut server = TestServer::start().await;
    for i in 0..20 {
        start_chat(
            &server,
            &format!("Customer {i}"),
            Some(&"text ".repeat(200)),
        )
        .await;
    }
    server.advance(Duration::from_secs(1)).await;
    server.stop().await;
    let dir = server.dir.clone();
    let path = dir.path().join("switchboard.redb");
    assert!(std::fs::metadata(&path).unwrap().len() > 0);
    (dir, path)
}

/// Opens and loads `path`, turning a panic into `Err("panic: …")`.
fn open_and_load(path: &Path) -> Result<Result<(), StoreError>, String> {
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        let store = Store::open(path)?;
        store.load().map(|_| ())
    }))
    .map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

#[tokio::test]
async fn a_zero_byte_store_file_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.redb");
    std::fs::File::create(&path).unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::EmptyFile { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("empty (0 bytes)"), "{text}");
    assert!(text.contains("Restore it from a backup"), "{text}");
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        0,
        "not overwritten"
    );
    // A missing file is still a new, empty store.
    let fresh = dir.path().join("new.redb");
    assert!(Store::open(&fresh).is_ok());
}

#[tokio::test]
async fn garbage_over_any_part_of_the_store_is_an_error_or_harmless_never_a_panic() {
    let (_dir, path) = populated_store().await;
    let original = std::fs::read(&path).unwrap();
    let len = original.len() as u64;
    let damaged_path = path.with_file_name("damaged.redb");
    let mut refused = 0;
    let mut offset = 0u64;
    while offset < len {
        std::fs::write(&damaged_path, &original).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&damaged_path)
            .unwrap();
        f.seek(SeekFrom::Start(offset)).unwrap();
        let n = 512.min(len - offset) as usize;
        f.write_all(&vec![0xA5; n]).unwrap();
        drop(f);
        match open_and_load(&damaged_path) {
            Err(panic) => panic!("a store damaged at byte {offset} panicked: {panic}"),
            Ok(Err(e)) => {
                refused += 1;
                let text = e.to_string();
                if matches!(e, StoreError::Damaged { .. }) {
                    assert!(text.contains("Restore the file from a backup"), "{text}");
                }
            }
            Ok(Ok(())) => {}
        }
        offset += 4096;
    }
    assert!(refused > 0, "some damage was detected");
    let _ = std::fs::remove_file(&damaged_path);
}

#[tokio::test]
async fn a_truncated_or_foreign_store_file_is_a_clear_error() {
    let (_dir, path) = populated_store().await;
    let original = std::fs::read(&path).unwrap();
    // Cut in half.
    std::fs::write(&path, &original[..original.len() / 2]).unwrap();
    let err = open_and_load(&path)
        .expect("no panic")
        .expect_err("a truncated store is refused");
    assert!(err.to_string().contains("Restore"), "{err}");
    // Not a store at all.
    std::fs::write(&path, b"this is not a database\n".repeat(100)).unwrap();
    let err = open_and_load(&path)
        .expect("no panic")
        .expect_err("a foreign file is refused");
    assert!(err.to_string().contains("Restore"), "{err}");
}

/// Whether the open of `path` read and verified every page (the store is dropped again,
/// which seals it).
fn verified_at_open(path: &Path) -> bool {
    match Store::open(path).unwrap() {
        Store::Redb(store) => store.verified_at_open(),
        Store::Postgres(_) => unreachable!("a file path opens redb"),
    }
}

#[tokio::test]
async fn a_store_closed_cleanly_and_untouched_since_opens_without_verifying_every_page() {
    let (_dir, path) = populated_store().await;
    let seal = path.with_file_name("switchboard.redb.clean");
    assert!(seal.exists(), "the server's clean stop sealed the file");
    let store = Store::open(&path).unwrap();
    let Store::Redb(redb) = &store else {
        unreachable!()
    };
    assert!(!redb.verified_at_open(), "the seal matched: no full check");
    assert!(
        !seal.exists(),
        "the seal is consumed while the store is open"
    );
    store.load().unwrap();
    drop(store);
    assert!(seal.exists(), "sealed again by the clean close");
    assert!(!verified_at_open(&path), "and skipped again");
}

#[tokio::test]
async fn a_store_without_a_seal_or_changed_since_its_clean_close_is_verified_in_full() {
    let (_dir, path) = populated_store().await;
    let seal = path.with_file_name("switchboard.redb.clean");
    // No seal: a crash, a kill -9, a file restored from a backup.
    std::fs::remove_file(&seal).unwrap();
    assert!(verified_at_open(&path), "no seal: every page verified");
    // Written to after the close, even without changing its length or bytes.
    assert!(seal.exists());
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    assert!(verified_at_open(&path), "a write after the close: verified");
    // Only its timestamps changed, as `touch` does.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    assert!(
        verified_at_open(&path),
        "metadata changed after the close: verified"
    );
    // Another file put in its place with the seal left behind.
    let copy = path.with_file_name("copy.redb");
    std::fs::copy(&path, &copy).unwrap();
    std::fs::rename(&copy, &path).unwrap();
    assert!(verified_at_open(&path), "a replaced file: verified");
    // Damage behind a seal that no longer matches is found by the full check (or lands in
    // free pages and is harmless); never a panic.
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let len = f.metadata().unwrap().len();
    f.seek(SeekFrom::Start(len / 2)).unwrap();
    f.write_all(&vec![0xA5; 64 * 1024]).unwrap();
    drop(f);
    match open_and_load(&path) {
        Err(panic) => panic!("the damaged store panicked: {panic}"),
        Ok(Err(e)) => assert!(e.to_string().contains("Restore"), "{e}"),
        Ok(Ok(())) => {}
    }
}
