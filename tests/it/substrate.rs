//! Tests of the test substrate itself, through the kube client.

use crate::support::SimCluster;

#[test]
fn starts_and_stops() {
    let c = SimCluster::start();
    assert!(c.kubeconfig_path().exists());
}

#[test]
fn healthcare_scenario_comes_up() {
    let t = std::time::Instant::now();
    let c = SimCluster::with_scenario(crate::support::Scenario::Healthcare);
    eprintln!("healthcare up in {:?}", t.elapsed());
    let pods = c.pod_names("default", "app=postgres");
    assert_eq!(pods.len(), 1);
    let names = c.query("default", &pods[0], "healthcare", "SELECT name FROM patients ORDER BY registered_at");
    assert_eq!(names, vec![vec!["Alice"], vec!["Bob"], vec!["Ibrahim"]]);
}
