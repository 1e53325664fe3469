//! The loaded policy set and its two questions: `decide` and `visible`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cedar_policy::{
    AuthorizationError, Authorizer, Context, Decision as CedarDecision, Effect, Entities, Policy,
    PolicyId, Request, Response, RestrictedExpression, Schema,
};
use sha2::{Digest, Sha256};

use crate::args::{args_record, Shape};
use crate::entities::{base_entities, check_server_name, Kind, Types};
use crate::load::{self, Loaded};
use crate::reads::Reads;
use crate::slice::{Buckets, DecisionMemo, Slice, SliceCache, VisibleMemo};
use crate::{
    Action, AgentEntity, CallRequest, Decision, EntityModel, KnownTargets, PolicyError, PolicyInfo,
    PolicyRef, PolicySources, NO_PERMIT, SHIPPED_SCHEMA, UNKNOWN_AGENT,
};

/// The file name the shipped schema is reported under.
const SHIPPED_SCHEMA_NAME: &str = "<shipped airlock.cedarschema>";

/// A validated policy set, ready to answer. `Send + Sync`; share it in an `Arc`.
#[derive(Debug)]
pub struct PolicyEngine {
    types: Types,
    schema: Schema,
    /// The schema's context type per action (by `Action::index`).
    context_shapes: [Option<Shape>; 3],
    base: Entities,
    pub(crate) model: EntityModel,
    agents: HashSet<String>,
    pub(crate) loaded: Vec<Loaded>,
    /// Each policy's visibility version (`None`: it can only forbid sometimes).
    visible_policies: Vec<Option<Policy>>,
    /// What each policy reads from `context`.
    pub(crate) policy_reads: Vec<Reads>,
    by_id: HashMap<String, usize>,
    buckets: Buckets,
    cache: SliceCache,
    digest: String,
    pub(crate) validation_warnings: Vec<String>,
    authorizer: Authorizer,
}

impl PolicyEngine {
    /// Reads the schema (or uses the shipped one) and the policy files, and
    /// builds the engine for `model`.
    pub fn load(src: &PolicySources, model: &EntityModel) -> Result<PolicyEngine, PolicyError> {
        let (schema_name, schema_text) = match &src.schema {
            Some(path) => (path.display().to_string(), load::read(path)?),
            None => (SHIPPED_SCHEMA_NAME.to_owned(), SHIPPED_SCHEMA.to_owned()),
        };
        let mut files = Vec::new();
        for path in load::expand_files(&src.files)? {
            files.push((path.display().to_string(), load::read(&path)?));
        }
        Self::build(&schema_name, &schema_text, &files, model)
    }

    /// Builds the engine from texts: `policies` are `(file name, text)` pairs.
    pub fn from_texts(
        schema: &str,
        policies: &[(String, String)],
        model: &EntityModel,
    ) -> Result<PolicyEngine, PolicyError> {
        Self::build("<schema>", schema, policies, model)
    }

    fn build(
        schema_name: &str,
        schema_text: &str,
        files: &[(String, String)],
        model: &EntityModel,
    ) -> Result<PolicyEngine, PolicyError> {
        let parsed = load::parse_schema(schema_name, schema_text)?;
        let (loaded, validation_warnings) = load::parse_and_validate(&parsed.schema, files)?;
        let types = Types::new()?;
        let base = base_entities(&types, model, &parsed.schema)?;
        let visible_policies = loaded
            .iter()
            .map(|l| visibility_policy(&l.policy))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| PolicyError::whole("<policies>", m))?;
        let policy_reads = loaded.iter().map(|l| Reads::of([&l.policy])).collect();
        let by_id = loaded
            .iter()
            .enumerate()
            .map(|(i, l)| (l.meta.id.clone(), i))
            .collect();
        let context_shapes = [Action::CallTool, Action::ReadResource, Action::GetPrompt]
            .map(|a| Shape::context_of(&parsed.json, a.as_str()));
        Ok(PolicyEngine {
            types,
            context_shapes,
            base,
            agents: model.agents.iter().map(|a| a.id.clone()).collect(),

            model: model.clone(),
            buckets: Buckets::new(loaded.iter().map(|l| &l.policy)),
            visible_policies,
            policy_reads,
            by_id,
            loaded,
            cache: SliceCache::default(),
            digest: digest(schema_text, files),
            validation_warnings,
            authorizer: Authorizer::new(),
            schema: parsed.schema,
        })
    }

    /// This engine with `extra` agents among its entities (agents registered with
    /// `airlock agents add`): the same policies, deciding for them exactly as for the agents
    /// of the model. Each must act for a human and on a task the model has, and may not reuse
    /// an agent's name. The policy digest is unchanged (it covers the policy files).
    pub fn with_agents(&self, extra: &[AgentEntity]) -> Result<PolicyEngine, PolicyError> {
        let model = crate::entities::with_agents(&self.model, extra)?;
        let base = base_entities(&self.types, &model, &self.schema)?;
        Ok(PolicyEngine {
            types: self.types.clone(),
            schema: self.schema.clone(),
            context_shapes: self.context_shapes.clone(),
            base,
            agents: model.agents.iter().map(|a| a.id.clone()).collect(),
            model,
            buckets: Buckets::new(self.loaded.iter().map(|l| &l.policy)),
            visible_policies: self.visible_policies.clone(),
            policy_reads: self.policy_reads.clone(),
            by_id: self.by_id.clone(),
            loaded: self.loaded.clone(),
            // Slices hold the entities: none of the old ones may answer for the new model.
            cache: SliceCache::default(),
            digest: self.digest.clone(),
            validation_warnings: self.validation_warnings.clone(),
            authorizer: Authorizer::new(),
        })
    }

    /// Authorizes one call. Never fails: every problem is a [`Decision::Deny`].
    pub fn decide(&self, req: &CallRequest<'_>) -> Decision {
        match self.slice_for(req.agent, req.action, req.server, req.name) {
            Ok(slice) => self.decide_in(&slice, req),
            Err(message) => deny(message),
        }
    }

    /// Could `agent` ever be allowed `action` on this target, whatever the
    /// arguments? Answered by partial evaluation of the slice `decide` uses,
    /// with the entities known and `context` unknown: hidden only when the
    /// answer is Deny for every context (no permit can hold, or a forbid holds
    /// whatever the context); a residual (it depends on the arguments, the
    /// session or an approval) or an Allow keeps it visible. Memoized per
    /// agent in the target's slice.
    pub fn visible(&self, agent: &str, action: Action, server: &str, name: &str) -> bool {
        let Ok(slice) = self.slice_for(agent, action, server, name) else {
            return false;
        };
        if let Some(visible) = slice.visible_memo.get(agent) {
            return visible;
        }
        let visible = match self.could_allow(&slice, agent, action) {
            Some(answer) => answer,
            // A policy errored with the context unknown. `decide` denies a call on which a
            // policy errors, but here we cannot tell whether a real context would avoid the
            // error (e.g. a condition that reads the arguments first), so there is no precise
            // answer. Falling back to the scope-only over-approximation errs towards *showing*
            // the tool, which is the safe direction for a listing: a listing grants nothing,
            // every call is still judged in full by `decide` (where an error is a deny), while
            // hiding a tool some call could be allowed would break a legitimate agent.
            None => self.visible_by_scope(&slice, agent, action),
        };
        slice.visible_memo.put(agent, visible);
        visible
    }

    /// Partial evaluation with `context` unknown: `Some(false)` when every call is denied
    /// whatever its context, `Some(true)` when some call might be allowed (a residual, or
    /// Allow), `None` when a policy errored.
    fn could_allow(&self, slice: &Slice, agent: &str, action: Action) -> Option<bool> {
        // No `.context(..)`: the context stays unknown. No schema either: `decide` checks the
        // request against it only when it cannot type the context itself, and an ill-typed
        // call is denied there anyway.
        let request = Request::builder()
            .principal(self.types.uid(Kind::Agent, agent))
            .action(self.types.action(action))
            .resource(slice.resource.clone())
            .build();
        let response =
            self.authorizer
                .is_authorized_partial(&request, &slice.policies, &slice.entities);
        if response.definitely_errored().next().is_some() {
            return None;
        }
        Some(response.decision() != Some(CedarDecision::Deny))
    }

    /// The conservative check: true when some permit's scope matches and no
    /// unconditional forbid does (see [`visibility_policy`]).
    fn visible_by_scope(&self, slice: &Slice, agent: &str, action: Action) -> bool {
        let principal = self.types.uid(Kind::Agent, agent);
        let Ok(request) = Request::new(
            principal,
            self.types.action(action),
            slice.resource.clone(),
            Context::empty(),
            None,
        ) else {
            return false;
        };
        let response = self
            .authorizer
            .is_authorized(&request, &slice.visible, &slice.entities);
        response.decision() == CedarDecision::Allow
            && response.diagnostics().errors().next().is_none()
    }

    /// The value of annotation `key` on the policy with id `id` (`@id`, or
    /// `file:line`), e.g. `@approvers("comms")`.
    pub fn annotation(&self, id: &str, key: &str) -> Option<&str> {
        let i = *self.by_id.get(id)?;
        self.loaded.get(i)?.policy.annotation(key)
    }

    /// SHA-256 (hex) over the schema text and each policy file's name and
    /// text, in load order, each length-prefixed.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Every loaded policy, in load order.
    pub fn policies(&self) -> Vec<PolicyInfo> {
        self.loaded
            .iter()
            .map(|l| PolicyInfo {
                id: l.meta.id.clone(),
                effect: effect_str(l.meta.effect),
                location: l.meta.location.clone(),
                reason: l.meta.reason.clone(),
                approval: l.meta.approval.clone(),
            })
            .collect()
    }

    /// Checks the unknown agent and server name, then finds or builds the slice.
    fn slice_for(
        &self,
        agent: &str,
        action: Action,
        server: &str,
        name: &str,
    ) -> Result<Arc<Slice>, String> {
        if !self.agents.contains(agent) {
            return Err(UNKNOWN_AGENT.to_owned());
        }
        check_server_name(server)?;
        self.cache.get_or_build(action, server, name, || {
            self.build_slice(action, server, name, None)
        })
    }

    /// The slice for one target: the buckets that can apply, or `only`.
    fn build_slice(
        &self,
        action: Action,
        server: &str,
        name: &str,
        only: Option<&[usize]>,
    ) -> Result<Slice, String> {
        let (resource, extra) = self.types.target(action, server, name);
        let indices = match only {
            Some(all) => all.to_vec(),
            None => self.buckets.for_target(server, &resource),
        };
        let policies = cedar_policy::PolicySet::from_policies(
            indices
                .iter()
                .filter_map(|&i| self.loaded.get(i).map(|l| l.policy.clone())),
        )
        .map_err(|e| format!("building the policy slice: {e}"))?;
        let visible = cedar_policy::PolicySet::from_policies(
            indices
                .iter()
                .filter_map(|&i| self.visible_policies.get(i).cloned().flatten()),
        )
        .map_err(|e| format!("building the visibility slice: {e}"))?;
        let entities = self
            .base
            .clone()
            .add_entities(extra, Some(&self.schema))
            .map_err(|e| format!("adding the target entity: {e}"))?;
        let reads = match only {
            // The reference for tests: the whole context, however little is read.
            Some(_) => Reads::All,
            None => indices.iter().fold(Reads::Nothing, |mut acc, &i| {
                if let Some(r) = self.policy_reads.get(i) {
                    acc.merge(r);
                }
                acc
            }),
        };
        Ok(Slice {
            policies,
            visible,
            entities,
            resource,
            reads,
            memo: DecisionMemo::default(),
            visible_memo: VisibleMemo::default(),
        })
    }

    fn decide_in(&self, slice: &Slice, req: &CallRequest<'_>) -> Decision {
        if !self.context_free(slice, req.action) || !args_fit(req) {
            return self.decide_uncached(slice, req);
        }
        if let Some(decision) = slice.memo.get(req.agent) {
            return decision;
        }
        let decision = self.decide_uncached(slice, req);
        slice.memo.put(req.agent, &decision);
        decision
    }

    /// Whether the slice's decisions ignore the call's context: its policies read nothing from
    /// `context` and the schema's context type is known (else the whole context is built and
    /// checked against the schema). Then the request's context is always empty, `granted`
    /// included, and the decision is a function of the agent alone.
    fn context_free(&self, slice: &Slice, action: Action) -> bool {
        slice.reads == Reads::Nothing
            && matches!(self.context_shapes[action.index()], Some(Shape::Record(_)))
    }

    fn decide_uncached(&self, slice: &Slice, req: &CallRequest<'_>) -> Decision {
        let first = match self.evaluate(slice, req, req.approval_granted) {
            Ok(r) => r,
            Err(message) => return deny(message),
        };
        let decision = self.classify(&first);
        if req.approval_granted {
            return decision;
        }
        match decision {
            Decision::Deny { reasons, errors }
                if errors.is_empty()
                    && !reasons.is_empty()
                    && reasons.iter().all(|r| r.approval.is_some()) =>
            {
                // Hold only what approval would unblock: with `granted` the
                // call must be allowed, else a human would approve in vain.
                match self.evaluate(slice, req, true).map(|r| self.classify(&r)) {
                    Ok(Decision::Allow { .. }) => Decision::NeedsApproval { reasons },
                    Ok(other) => other,
                    Err(message) => deny(message),
                }
            }
            other => other,
        }
    }

    fn evaluate(
        &self,
        slice: &Slice,
        req: &CallRequest<'_>,
        granted: bool,
    ) -> Result<Response, String> {
        let (context, validate) = self.context(req, granted, &slice.reads)?;
        let request = Request::new(
            self.types.uid(Kind::Agent, req.agent),
            self.types.action(req.action),
            slice.resource.clone(),
            context,
            validate.then_some(&self.schema),
        )
        .map_err(|e| format!("the call does not fit the schema: {e}"))?;
        Ok(self
            .authorizer
            .is_authorized(&request, &slice.policies, &slice.entities))
    }

    /// The request context: `{ args, session: { id }, approval: { granted } }`,
    /// holding only what `reads` says the policies can observe. Also says
    /// whether Cedar must still check it against the schema (only when the
    /// schema's context type could not be read, so nothing was typed here).
    fn context(
        &self,
        req: &CallRequest<'_>,
        granted: bool,
        reads: &Reads,
    ) -> Result<(Context, bool), String> {
        if !args_fit(req) {
            return Err("the call's arguments are not a JSON object".to_owned());
        }
        let shape = self.context_shapes[req.action.index()].as_ref();
        let (typed, reads) = match shape {
            Some(Shape::Record(attrs)) => (Some(attrs), reads),
            _ => (None, &Reads::All),
        };
        // A user schema may leave some of these out; strict validation means
        // no policy reads what the schema does not declare.
        let wanted = |name: &str| reads.covers(name) && typed.is_none_or(|t| t.contains_key(name));
        let mut pairs = Vec::new();
        if let Some(args_reads) = reads.get("args").filter(|_| wanted("args")) {
            let args_shape = typed.and_then(|t| t.get("args")).map(|(s, _)| s);
            pairs.push((
                "args".to_owned(),
                args_record(req.args, args_shape, args_reads)?,
            ));
        }
        let record = |name: &str, value: RestrictedExpression| {
            RestrictedExpression::new_record([(name.to_owned(), value)]).map_err(|e| e.to_string())
        };
        if wanted("session") {
            let id = RestrictedExpression::new_string(req.session.to_owned());
            // `labels` only where the schema declares it (a user schema may not).
            let declares_labels = match typed.and_then(|t| t.get("session")) {
                Some((Shape::Record(attrs), _)) => attrs.contains_key("labels"),
                _ => typed.is_none(),
            };
            let session = if declares_labels {
                let labels = RestrictedExpression::new_set(
                    req.labels
                        .iter()
                        .map(|l| RestrictedExpression::new_string(l.clone())),
                );
                RestrictedExpression::new_record([
                    ("id".to_owned(), id),
                    ("labels".to_owned(), labels),
                ])
                .map_err(|e| e.to_string())?
            } else {
                record("id", id)?
            };
            pairs.push(("session".to_owned(), session));
        }
        if wanted("approval") {
            let granted = RestrictedExpression::new_bool(granted);
            pairs.push(("approval".to_owned(), record("granted", granted)?));
        }
        let context = if pairs.is_empty() {
            Context::empty()
        } else {
            Context::from_pairs(pairs).map_err(|e| format!("building the context: {e}"))?
        };
        Ok((context, typed.is_none()))
    }

    /// Cedar's response → Airlock's decision (without the approval step).
    fn classify(&self, response: &Response) -> Decision {
        let diagnostics = response.diagnostics();
        let mut failed = Vec::new();
        let mut errors = Vec::new();
        for e in diagnostics.errors() {
            match e {
                AuthorizationError::PolicyEvaluationError(e) => {
                    failed.push(self.policy_ref(e.policy_id()));
                    errors.push(format!("policy {}: {}", e.policy_id(), e.inner()));
                }
            }
        }
        if !errors.is_empty() {
            // Cedar skipped these policies; a skipped forbid must not allow.
            return Decision::Deny {
                reasons: failed,
                errors,
            };
        }
        let reasons: Vec<PolicyRef> = diagnostics.reason().map(|id| self.policy_ref(id)).collect();
        match response.decision() {
            CedarDecision::Allow => Decision::Allow { reasons },
            CedarDecision::Deny if reasons.is_empty() => Decision::Deny {
                reasons,
                errors: vec![NO_PERMIT.to_owned()],
            },
            CedarDecision::Deny => Decision::Deny {
                reasons,
                errors: Vec::new(),
            },
        }
    }

    fn policy_ref(&self, id: &PolicyId) -> PolicyRef {
        match self
            .by_id
            .get(AsRef::<str>::as_ref(id))
            .and_then(|&i| self.loaded.get(i))
        {
            Some(l) => PolicyRef {
                id: l.meta.id.clone(),
                reason: l.meta.reason.clone(),
                approval: l.meta.approval.clone(),
                location: l.meta.location.clone(),
            },
            None => PolicyRef {
                id: id.to_string(),
                reason: None,
                approval: None,
                location: String::new(),
            },
        }
    }

    /// `decide` against the whole, unsliced policy set (slicing soundness tests).
    #[cfg(test)]
    pub(crate) fn decide_unsliced(&self, req: &CallRequest<'_>) -> Decision {
        if !self.agents.contains(req.agent) {
            return deny(UNKNOWN_AGENT.to_owned());
        }
        if let Err(m) = check_server_name(req.server) {
            return deny(m);
        }
        let all: Vec<usize> = (0..self.loaded.len()).collect();
        match self.build_slice(req.action, req.server, req.name, Some(&all)) {
            Ok(slice) => self.decide_in(&slice, req),
            Err(m) => deny(m),
        }
    }

    /// The scope-only check on its own (`visible`'s fallback), for comparing with `visible`.
    #[cfg(test)]
    pub(crate) fn visible_by_scope_only(
        &self,
        agent: &str,
        action: Action,
        server: &str,
        name: &str,
    ) -> bool {
        self.slice_for(agent, action, server, name)
            .is_ok_and(|slice| self.visible_by_scope(&slice, agent, action))
    }

    #[cfg(test)]
    pub(crate) fn cached_slices(&self) -> usize {
        self.cache.len()
    }

    #[cfg(test)]
    pub(crate) fn slice_size(&self, action: Action, server: &str, name: &str) -> usize {
        self.build_slice(action, server, name, None)
            .map_or(0, |s| s.policies.policies().count())
    }

    pub(crate) fn kinds_of_literals(&self) -> impl Iterator<Item = (&Loaded, Kind, String)> + '_ {
        self.loaded.iter().flat_map(|l| {
            l.policy
                .entity_literals()
                .into_iter()
                .filter_map(move |uid| {
                    let kind = Kind::of(&uid.type_name().to_string())?;
                    Some((l, kind, uid.id().unescaped().to_owned()))
                })
        })
    }
}

/// Arguments must be an object (or absent): anything else is refused, context read or not.
fn args_fit(req: &CallRequest<'_>) -> bool {
    !req.args.is_some_and(|a| !a.is_object() && !a.is_null())
}

fn deny(message: String) -> Decision {
    Decision::Deny {
        reasons: Vec::new(),
        errors: vec![message],
    }
}

fn effect_str(effect: Effect) -> &'static str {
    match effect {
        Effect::Permit => "permit",
        Effect::Forbid => "forbid",
    }
}

/// The policy's version for `visible`'s fallback: a permit with its `when`/`unless`
/// conditions removed (it might apply, whatever the arguments), a forbid only
/// if it has no conditions (it always applies when its scope matches).
/// Evaluated with an empty context, "Allow" then means "some call could be
/// allowed" — an over-approximation, so a callable tool is never hidden.
fn visibility_policy(policy: &Policy) -> Result<Option<Policy>, String> {
    match policy.effect() {
        Effect::Forbid if policy.has_non_scope_constraint() => Ok(None),
        Effect::Forbid => Ok(Some(policy.clone())),
        Effect::Permit => {
            let mut json = policy
                .to_json()
                .map_err(|e| format!("policy {}: {e}", policy.id()))?;
            if let Some(obj) = json.as_object_mut() {
                obj.insert(
                    "conditions".to_owned(),
                    serde_json::Value::Array(Vec::new()),
                );
            }
            Policy::from_json(Some(policy.id().clone()), json)
                .map(Some)
                .map_err(|e| format!("policy {}: {e}", policy.id()))
        }
    }
}

/// Length-prefixed so that moving bytes between name and text changes it.
fn digest(schema: &str, files: &[(String, String)]) -> String {
    let mut h = Sha256::new();
    let mut part = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    part(schema.as_bytes());
    for (name, text) in files {
        part(name.as_bytes());
        part(text.as_bytes());
    }
    hex::encode(h.finalize())
}

impl PolicyEngine {
    /// Problems worth showing at `airlock check`: policies naming targets or
    /// principals that do not exist, an empty policy set, Cedar's validation
    /// warnings.
    pub fn warnings(&self, known: &KnownTargets) -> Vec<String> {
        crate::warnings::warnings(self, known)
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
pub(crate) mod tests;
