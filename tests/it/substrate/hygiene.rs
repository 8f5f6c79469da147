//! The substrate cleans up after itself: processes and directories go when a cluster or a
//! LocalPostgres is dropped, also when the test panics.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::support::{proc, LocalPostgres, Scenario, SimCluster};

fn postmaster_pid(data_dir: &std::path::Path) -> u32 {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).expect("postmaster.pid");
    text.lines().next().unwrap().trim().parse().unwrap()
}

fn gone_soon(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if !proc::alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_panicking_test_leaves_no_cluster_behind() {
    let (tx, rx) = std::sync::mpsc::channel::<(PathBuf, u32)>();
    let outcome = std::thread::spawn(move || {
        let c = SimCluster::with_scenario(Scenario::Healthcare);
        let pod = c.pod_names("default", "app=postgres").remove(0);
        let ep = c.pod_postgres("default", &pod).unwrap();
        tx.send((c.dir().to_path_buf(), postmaster_pid(&ep.data_dir)))
            .unwrap();
        panic!("the test failed");
    })
    .join();
    assert!(outcome.is_err(), "the thread panicked");
    let (dir, pid) = rx.recv().unwrap();
    assert!(gone_soon(pid), "postgres {pid} outlived its cluster");
    assert!(!dir.exists(), "{} outlived its cluster", dir.display());
}

#[test]
fn local_postgres_is_stopped_and_removed_on_drop() {
    let pg = LocalPostgres::start();
    let (dir, pid) = (pg.dir().to_path_buf(), pg.pid());
    assert_eq!(pg.psql("postgres", "SELECT 40 + 2"), "42");
    drop(pg);
    assert!(gone_soon(pid));
    assert!(!dir.exists());
}
