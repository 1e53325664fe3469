//! Slicing the policy set by resource so a decision evaluates only the
//! policies that can apply to its target.
//!
//! Soundness rests on the fixed entity hierarchy: a target `Tool::"s/t"` (or
//! `Resource`/`Prompt`) has exactly one parent, `Server::"s"`, and nothing
//! below it. So a policy whose resource scope is `== X` / `in X` / `is T in X`
//! with `X` a target can only match that target, and with `X = Server::"s"`
//! only targets of server `s`. Every other policy (unconstrained, `is T`,
//! scopes on other types) goes to the global bucket and is always evaluated.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use cedar_policy::{Entities, EntityUid, Policy, PolicySet, ResourceConstraint};

use crate::entities::Kind;
use crate::{Action, Decision};

/// Targets whose slices are kept (a few KiB each); past this, slices are
/// built per call (~25 µs), so an agent inventing tool names cannot grow
/// memory without bound.
const MAX_CACHED_SLICES: usize = 1024;

/// Policy indices by the resource their scope pins.
#[derive(Debug, Default)]
pub(crate) struct Buckets {
    global: Vec<usize>,
    servers: HashMap<String, Vec<usize>>,
    targets: HashMap<EntityUid, Vec<usize>>,
}

impl Buckets {
    pub(crate) fn new<'a>(policies: impl IntoIterator<Item = &'a Policy>) -> Self {
        let mut b = Buckets::default();
        for (i, p) in policies.into_iter().enumerate() {
            let pinned = match p.resource_constraint() {
                ResourceConstraint::Eq(uid)
                | ResourceConstraint::In(uid)
                | ResourceConstraint::IsIn(_, uid) => Some(uid),
                ResourceConstraint::Any | ResourceConstraint::Is(_) => None,
            };
            match pinned
                .as_ref()
                .map(|u| (Kind::of(&u.type_name().to_string()), u))
            {
                Some((Some(Kind::Server), uid)) => {
                    b.servers
                        .entry(uid.id().unescaped().to_owned())
                        .or_default()
                        .push(i);
                }
                Some((Some(Kind::Tool | Kind::Resource | Kind::Prompt), uid)) => {
                    b.targets.entry(uid.clone()).or_default().push(i);
                }
                _ => b.global.push(i),
            }
        }
        b
    }

    /// Indices of the policies that can apply to `target` of `server`, in order.
    pub(crate) fn for_target(&self, server: &str, target: &EntityUid) -> Vec<usize> {
        let mut out: BTreeSet<usize> = self.global.iter().copied().collect();
        out.extend(self.servers.get(server).into_iter().flatten());
        out.extend(self.targets.get(target).into_iter().flatten());
        out.into_iter().collect()
    }
}

/// Everything one target's decisions need.
#[derive(Debug)]
pub(crate) struct Slice {
    /// The policies that can apply, for `decide`.
    pub(crate) policies: PolicySet,
    /// Their visibility versions (see `engine::visibility_policy`), for `visible`'s fallback.
    pub(crate) visible: PolicySet,
    /// The model's entities plus the target and its server.
    pub(crate) entities: Entities,
    pub(crate) resource: EntityUid,
    /// What the policies can read from `context` (the rest is not built).
    pub(crate) reads: crate::reads::Reads,
    /// Decisions of a slice whose policies read nothing from `context`: they depend on the
    /// agent alone (entities and policies are fixed), so each is made once.
    pub(crate) memo: DecisionMemo,
    /// `visible`'s answers: they too depend on the agent alone (context is unknown there).
    pub(crate) visible_memo: VisibleMemo,
}

/// agent → decision, for context-free slices. Bounded by the configured agents: an unknown
/// agent is refused before a slice is consulted.
#[derive(Debug, Default)]
pub(crate) struct DecisionMemo(RwLock<HashMap<String, Decision>>);

impl DecisionMemo {
    pub(crate) fn get(&self, agent: &str) -> Option<Decision> {
        let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
        map.get(agent).cloned()
    }

    pub(crate) fn put(&self, agent: &str, decision: &Decision) {
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() < MAX_MEMO_AGENTS {
            map.insert(agent.to_owned(), decision.clone());
        }
    }
}

/// agent → visible. Bounded like [`DecisionMemo`] (configured agents, with a backstop); with
/// the slice cache's bound this keeps at most one entry per cached (action, server, name) and
/// agent.
#[derive(Debug, Default)]
pub(crate) struct VisibleMemo(RwLock<HashMap<String, bool>>);

impl VisibleMemo {
    pub(crate) fn get(&self, agent: &str) -> Option<bool> {
        let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
        map.get(agent).copied()
    }

    pub(crate) fn put(&self, agent: &str, visible: bool) {
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() < MAX_MEMO_AGENTS {
            map.insert(agent.to_owned(), visible);
        }
    }
}

/// A backstop: the map is keyed by configured agents only.
const MAX_MEMO_AGENTS: usize = 4096;

/// server → name → slice.
type ByServer = HashMap<String, HashMap<String, Arc<Slice>>>;

/// Builds slices on demand and keeps them per (action, server, name).
#[derive(Debug, Default)]
pub(crate) struct SliceCache {
    // action → server → name: lookups by `&str` without allocating a key.
    map: RwLock<[ByServer; 3]>,
}

impl SliceCache {
    /// The cached slice, or `build()` it (and cache it while there is room).
    pub(crate) fn get_or_build(
        &self,
        action: Action,
        server: &str,
        name: &str,
        build: impl FnOnce() -> Result<Slice, String>,
    ) -> Result<Arc<Slice>, String> {
        let a = action.index();
        {
            // A panic elsewhere cannot leave a half-built entry (entries are
            // inserted whole), so a poisoned lock is still usable.
            let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(s) = map[a].get(server).and_then(|m| m.get(name)) {
                return Ok(Arc::clone(s));
            }
        }
        let slice = Arc::new(build()?);
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        let cached: usize = map.iter().flat_map(|m| m.values()).map(HashMap::len).sum();
        if cached < MAX_CACHED_SLICES {
            let entry = map[a]
                .entry(server.to_owned())
                .or_default()
                .entry(name.to_owned())
                .or_insert_with(|| Arc::clone(&slice));
            return Ok(Arc::clone(entry));
        }
        Ok(slice)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        map.iter().flat_map(|m| m.values()).map(HashMap::len).sum()
    }
}

#[cfg(test)]
#[path = "slice_tests.rs"]
mod tests;
