//! The step graph: a petgraph DAG over the steps of a plan, its checks
//! (unknown dependencies, cycles) and a stable topological order.
//!
//! The order is Kahn's algorithm with ties broken by the order in which the
//! planner emitted the steps, so equal inputs always give the same plan text
//! — which the snapshot tests and saved-plan comparison rely on.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use petgraph::graph::{DiGraph, NodeIndex};

use crate::plan::Step;

/// Why steps cannot be ordered. A planner bug or a contradiction in the spec;
/// reported, never a panic.
#[derive(Debug, Clone, PartialEq, thiserror::Error, miette::Diagnostic)]
pub enum GraphError {
    #[error("step `{step}` depends on `{missing}`, which is not in the plan")]
    #[diagnostic(code(pgplan::graph::unknown_dependency))]
    UnknownDependency { step: String, missing: String },
    #[error("two steps have the address `{0}`")]
    #[diagnostic(code(pgplan::graph::duplicate))]
    Duplicate(String),
    #[error("the steps {} depend on each other in a cycle", .0.join(" → "))]
    #[diagnostic(
        code(pgplan::graph::cycle),
        help("the spec asks for contradictory orderings; check consumers and cleanup settings")
    )]
    Cycle(Vec<String>),
}

/// A DAG whose nodes are indices into a step list; an edge a → b means b depends on a.
pub struct StepGraph {
    pub graph: DiGraph<usize, ()>,
    nodes: Vec<NodeIndex>,
}

impl StepGraph {
    pub fn build(steps: &[Step]) -> Result<Self, GraphError> {
        let mut graph = DiGraph::with_capacity(steps.len(), steps.len() * 2);
        let mut by_address: HashMap<&str, usize> = HashMap::with_capacity(steps.len());
        let mut nodes = Vec::with_capacity(steps.len());
        for (i, s) in steps.iter().enumerate() {
            if by_address.insert(s.address.as_str(), i).is_some() {
                return Err(GraphError::Duplicate(s.address.clone()));
            }
            nodes.push(graph.add_node(i));
        }
        for (i, s) in steps.iter().enumerate() {
            for dep in &s.depends_on {
                let Some(&d) = by_address.get(dep.as_str()) else {
                    return Err(GraphError::UnknownDependency {
                        step: s.address.clone(),
                        missing: dep.clone(),
                    });
                };
                graph.update_edge(nodes[d], nodes[i], ());
            }
        }
        Ok(StepGraph { graph, nodes })
    }

    /// Indices of the steps in a stable topological order.
    pub fn order(&self, steps: &[Step]) -> Result<Vec<usize>, GraphError> {
        let n = self.nodes.len();
        let mut indegree: Vec<usize> = self
            .nodes
            .iter()
            .map(|&ni| {
                self.graph
                    .neighbors_directed(ni, petgraph::Incoming)
                    .count()
            })
            .collect();
        let mut ready: BinaryHeap<Reverse<usize>> =
            (0..n).filter(|&i| indegree[i] == 0).map(Reverse).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(Reverse(i)) = ready.pop() {
            order.push(i);
            for next in self
                .graph
                .neighbors_directed(self.nodes[i], petgraph::Outgoing)
            {
                let j = self.graph[next];
                indegree[j] -= 1;
                if indegree[j] == 0 {
                    ready.push(Reverse(j));
                }
            }
        }
        if order.len() < n {
            let cycle = petgraph::algo::kosaraju_scc(&self.graph)
                .into_iter()
                .find(|c| c.len() > 1)
                .map(|c| {
                    let mut names: Vec<String> = c
                        .iter()
                        .map(|ni| steps[self.graph[*ni]].address.clone())
                        .collect();
                    names.sort();
                    names
                })
                .unwrap_or_default();
            return Err(GraphError::Cycle(cycle));
        }
        Ok(order)
    }
}

/// Sort steps into dependency order, and keep only direct dependencies
/// (a dependency also reachable through another one is dropped), which is
/// what people read in a plan and all the executor needs.
pub fn order_steps(steps: Vec<Step>) -> Result<Vec<Step>, GraphError> {
    let graph = StepGraph::build(&steps)?;
    let order = graph.order(&steps)?;
    let mut slots: Vec<Option<Step>> = steps.into_iter().map(Some).collect();
    let mut ordered: Vec<Step> = order.into_iter().filter_map(|i| slots[i].take()).collect();
    reduce(&mut ordered);
    Ok(ordered)
}

/// Transitive reduction over steps already in topological order.
fn reduce(steps: &mut [Step]) {
    let pos: HashMap<String, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.address.clone(), i))
        .collect();
    // ancestors[i]: every step i depends on, directly or not (bitset).
    let words = steps.len().div_ceil(64);
    let mut ancestors: Vec<Vec<u64>> = Vec::with_capacity(steps.len());
    for step in steps.iter() {
        let mut set = vec![0u64; words];
        for d in &step.depends_on {
            if let Some(&j) = pos.get(d) {
                set[j / 64] |= 1 << (j % 64);
                for (w, a) in set.iter_mut().zip(&ancestors[j]) {
                    *w |= a;
                }
            }
        }
        ancestors.push(set);
    }
    for i in 0..steps.len() {
        let deps: Vec<usize> = steps[i]
            .depends_on
            .iter()
            .filter_map(|d| pos.get(d).copied())
            .collect();
        let keep: Vec<String> = deps
            .iter()
            .filter(|&&j| {
                !deps
                    .iter()
                    .any(|&k| k != j && ancestors[k][j / 64] & (1 << (j % 64)) != 0)
            })
            .map(|&j| steps[j].address.clone())
            .collect();
        steps[i].depends_on = keep;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Action, Operation, Risk};

    fn step(address: &str, deps: &[&str]) -> Step {
        Step {
            address: address.into(),
            placement: "p".into(),
            action: Action::Run,
            risk: Risk::Safe,
            summary: String::new(),
            reason: String::new(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            in_downtime: false,
            before: None,
            after: None,
            operation: Operation::HttpCheck {
                name: address.into(),
                url: "http://x".into(),
                expect_status: 200,
                contains: None,
            },
            warnings: Vec::new(),
        }
    }

    #[test]
    fn orders_by_dependency_then_emission() {
        let steps = vec![
            step("c", &["b"]),
            step("a", &[]),
            step("b", &["a"]),
            step("d", &[]),
        ];
        let ordered: Vec<String> = order_steps(steps)
            .unwrap()
            .into_iter()
            .map(|s| s.address)
            .collect();
        assert_eq!(ordered, ["a", "b", "c", "d"]);
    }

    #[test]
    fn keeps_only_direct_dependencies() {
        let steps = vec![step("a", &[]), step("b", &["a"]), step("c", &["a", "b"])];
        let ordered = order_steps(steps).unwrap();
        assert_eq!(ordered[2].depends_on, ["b"]);
    }

    #[test]
    fn reports_cycles_and_unknown_dependencies() {
        let err =
            order_steps(vec![step("a", &["b"]), step("b", &["a"]), step("c", &[])]).unwrap_err();
        assert_eq!(err, GraphError::Cycle(vec!["a".into(), "b".into()]));
        let err = order_steps(vec![step("a", &["zzz"])]).unwrap_err();
        assert!(matches!(err, GraphError::UnknownDependency { .. }));
    }
}
