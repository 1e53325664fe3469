//! Which stage a frame from the agent goes through, decided from its method alone.
//!
//! The rule is "every method that can make a server act passes policy, whatever its shape": the
//! acting methods map to a Cedar action, list methods pass but have their answers filtered, a short
//! list of lifecycle methods passes as is, and anything else is refused unless the config names it.

use airlock_policy::Action;

/// What to do with a request from the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestRoute {
    /// Decide with policy first: the method makes the server act on a named target.
    Act(ActKind),
    /// Forward, then filter the answer down to what the agent could ever use.
    List(ListKind),
    /// `completion/complete`: reveals a prompt's or resource's argument values, so it is allowed
    /// only where the agent could use that prompt or resource at all.
    Complete,
    /// `tasks/get`, `tasks/result`, `tasks/cancel`: allowed only for a task one of this
    /// session's calls created; a task's result is that call's result.
    Task(TaskOp),
    /// `tasks/list`: forwarded, and the answer filtered to this session's tasks.
    TaskList,
    /// Forward without a decision: lifecycle and housekeeping methods that act on nothing.
    Pass,
    /// A method the config explicitly lets through.
    Allowed,
    /// A method Airlock does not know: refused.
    Unknown,
}

/// The acting methods, each with the Cedar action that judges it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActKind {
    CallTool,
    ReadResource,
    SubscribeResource,
    GetPrompt,
}

impl ActKind {
    pub fn action(self) -> Action {
        match self {
            ActKind::CallTool => Action::CallTool,
            ActKind::ReadResource | ActKind::SubscribeResource => Action::ReadResource,
            ActKind::GetPrompt => Action::GetPrompt,
        }
    }

    /// The params member that names the target.
    pub fn target_key(self) -> &'static str {
        match self {
            ActKind::CallTool | ActKind::GetPrompt => "name",
            ActKind::ReadResource | ActKind::SubscribeResource => "uri",
        }
    }

    /// The params member holding the arguments, if the method has any.
    pub fn args_key(self) -> Option<&'static str> {
        match self {
            ActKind::CallTool | ActKind::GetPrompt => Some("arguments"),
            ActKind::ReadResource | ActKind::SubscribeResource => None,
        }
    }
}

/// What a `tasks/*` request does with a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskOp {
    Get,
    Result,
    Cancel,
}

/// The list methods whose answers are filtered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListKind {
    Tools,
    Resources,
    ResourceTemplates,
    Prompts,
}

impl ListKind {
    /// The result member holding the list, and the member of each entry that names it.
    pub fn members(self) -> (&'static str, &'static str) {
        match self {
            ListKind::Tools => ("tools", "name"),
            ListKind::Resources => ("resources", "uri"),
            ListKind::ResourceTemplates => ("resourceTemplates", "uriTemplate"),
            ListKind::Prompts => ("prompts", "name"),
        }
    }

    pub fn action(self) -> Action {
        match self {
            ListKind::Tools => Action::CallTool,
            ListKind::Resources | ListKind::ResourceTemplates => Action::ReadResource,
            ListKind::Prompts => Action::GetPrompt,
        }
    }
}

/// Classifies a request method. Method names are matched exactly: a server that matched them
/// loosely would otherwise see an acting call Airlock took for an unknown one, but unknown
/// methods are refused, so a case variant can never slip past policy.
pub fn route_request(method: &str, allow_methods: &[String]) -> RequestRoute {
    match method {
        "tools/call" => RequestRoute::Act(ActKind::CallTool),
        "resources/read" => RequestRoute::Act(ActKind::ReadResource),
        "resources/subscribe" => RequestRoute::Act(ActKind::SubscribeResource),
        "prompts/get" => RequestRoute::Act(ActKind::GetPrompt),
        "tools/list" => RequestRoute::List(ListKind::Tools),
        "resources/list" => RequestRoute::List(ListKind::Resources),
        "resources/templates/list" => RequestRoute::List(ListKind::ResourceTemplates),
        "prompts/list" => RequestRoute::List(ListKind::Prompts),
        "completion/complete" => RequestRoute::Complete,
        // Lifecycle (both eras) and housekeeping on the agent's own session.
        "initialize"
        | "ping"
        | "server/discover"
        | "logging/setLevel"
        | "resources/unsubscribe"
        | "subscriptions/listen" => RequestRoute::Pass,
        "tasks/get" => RequestRoute::Task(TaskOp::Get),
        "tasks/result" => RequestRoute::Task(TaskOp::Result),
        "tasks/cancel" => RequestRoute::Task(TaskOp::Cancel),
        "tasks/list" => RequestRoute::TaskList,
        m if allow_methods.iter().any(|a| a == m) => RequestRoute::Allowed,
        _ => RequestRoute::Unknown,
    }
}

/// Notifications the agent may send: each is about the agent's own requests or session.
/// Anything else is dropped, since a server could act on a notification it understands.
pub fn notification_allowed(method: &str) -> bool {
    matches!(
        method,
        "notifications/initialized"
            | "notifications/cancelled"
            | "notifications/progress"
            | "notifications/roots/list_changed"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acting_methods_go_through_policy() {
        assert_eq!(
            route_request("tools/call", &[]),
            RequestRoute::Act(ActKind::CallTool)
        );
        assert_eq!(
            route_request("resources/subscribe", &[]),
            RequestRoute::Act(ActKind::SubscribeResource)
        );
        assert_eq!(
            route_request("prompts/get", &[]),
            RequestRoute::Act(ActKind::GetPrompt)
        );
    }

    #[test]
    fn case_variants_and_unknown_methods_are_refused() {
        assert_eq!(route_request("Tools/Call", &[]), RequestRoute::Unknown);
        assert_eq!(route_request("tools/call ", &[]), RequestRoute::Unknown);
        assert_eq!(route_request("admin/reset", &[]), RequestRoute::Unknown);
        assert_eq!(
            route_request("admin/reset", &["admin/reset".to_string()]),
            RequestRoute::Allowed
        );
    }

    #[test]
    fn allow_methods_cannot_turn_an_acting_method_into_a_pass() {
        let allow = vec!["tools/call".to_string()];
        assert_eq!(
            route_request("tools/call", &allow),
            RequestRoute::Act(ActKind::CallTool)
        );
    }

    #[test]
    fn only_known_notifications_pass() {
        assert!(notification_allowed("notifications/cancelled"));
        assert!(!notification_allowed("notifications/tools/call"));
    }
}
