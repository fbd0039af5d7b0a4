//! Terraform (`infra/terraform`) against the code's own contract ([`cafe_settings::units`]):
//! - every function and ECS service is handed exactly the variables its unit reads
//!   (all it must have, nothing it does not read), secrets as secrets;
//! - every role's IAM policy grants exactly the unit's AWS calls and what AWS checks
//!   on its behalf, per resource (the platform's logging, tracing and KMS aside);
//! - every `.tf` file parses and uses only real `aws_*` types (the provider's own list),
//!   the check that stands where `terraform validate` cannot run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use cafe_settings::Unit;
use cafe_settings::units::{API_FUNCTION, PAYMENT_FUNCTION, PROJECTOR_FUNCTION, RELAY, WORKERS};
use hcl::expr::{Expression, ObjectKey};
use hcl::{Block, Body};

fn terraform() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../terraform")
}

fn parse(path: &Path) -> Body {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    hcl::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every attribute of every `locals` block of `body`.
fn locals(body: &Body) -> BTreeMap<String, Expression> {
    body.blocks()
        .filter(|b| b.identifier() == "locals")
        .flat_map(|b| b.body().attributes())
        .map(|a| (a.key().to_owned(), a.expr().clone()))
        .collect()
}

fn block<'a>(body: &'a Body, kind: &str, label: &str) -> &'a Block {
    body.blocks()
        .find(|b| b.identifier() == kind && b.labels().first().map(|l| l.as_str()) == Some(label))
        .unwrap_or_else(|| panic!("no {kind} {label:?}"))
}

fn attribute<'a>(body: &'a Body, key: &str) -> &'a Expression {
    body.attributes()
        .find(|a| a.key() == key)
        .map(|a| a.expr())
        .unwrap_or_else(|| panic!("no attribute {key}"))
}

fn key_text(key: &ObjectKey) -> String {
    match key {
        ObjectKey::Identifier(id) => id.to_string(),
        ObjectKey::Expression(Expression::String(s)) => s.clone(),
        other => panic!("a key Terraform computes: {other:?}"),
    }
}

/// An object's entries (keys as written): a literal, `local.<name>` of `locals`, or
/// `merge(...)` of those, the forms the configuration writes its contracts in.
fn object<'a>(expr: &'a Expression, locals: &'a BTreeMap<String, Expression>) -> BTreeMap<String, &'a Expression> {
    match expr {
        Expression::Object(o) => o.iter().map(|(k, v)| (key_text(k), v)).collect(),
        Expression::FuncCall(call) if call.name.name.as_str() == "merge" => {
            call.args.iter().flat_map(|arg| object(arg, locals)).collect()
        }
        Expression::Traversal(t) => match (&t.expr, t.operators.as_slice()) {
            (Expression::Variable(v), [hcl::expr::TraversalOperator::GetAttr(name)]) if v.as_str() == "local" => {
                let local = locals.get(name.as_str()).unwrap_or_else(|| panic!("no local.{name}"));
                object(local, locals)
            }
            _ => panic!("not an object this test reads: {t:?}"),
        },
        other => panic!("not an object this test reads: {other:?}"),
    }
}

fn keys(expr: &Expression, locals: &BTreeMap<String, Expression>) -> BTreeSet<String> {
    object(expr, locals).into_keys().collect()
}

fn strings(expr: &Expression) -> Vec<String> {
    match expr {
        Expression::Array(items) => items
            .iter()
            .map(|e| match e {
                Expression::String(s) => s.clone(),
                other => panic!("not a string literal: {other:?}"),
            })
            .collect(),
        other => panic!("not a list literal: {other:?}"),
    }
}

/// What a unit is handed, against what it reads.
fn check_environment(unit: &Unit, environment: &BTreeSet<String>, secrets: &BTreeSet<String>) -> Vec<String> {
    let mut wrong = Vec::new();
    let must: BTreeSet<String> = unit.must_have().into_iter().collect();
    let may: BTreeSet<String> = unit.may_have().into_iter().collect();
    let needed_secrets: BTreeSet<String> = unit.secrets.iter().map(|s| (*s).to_owned()).collect();
    for missing in must.difference(environment) {
        wrong.push(format!("{}: {missing} is not handed", unit.name));
    }
    for extra in environment
        .iter()
        .filter(|v| !may.contains(*v) || needed_secrets.contains(*v))
    {
        wrong.push(format!(
            "{}: {extra} is handed as plain environment but not read as such",
            unit.name
        ));
    }
    if *secrets != needed_secrets {
        wrong.push(format!(
            "{}: secrets {secrets:?}, the code reads {needed_secrets:?}",
            unit.name
        ));
    }
    wrong
}

#[test]
fn every_function_is_handed_exactly_what_its_unit_reads() {
    let main = parse(&terraform().join("main.tf"));
    let lambdas = block(&main, "module", "lambdas").body();
    let locals = locals(&main);
    let function_names = object(&locals["function_names"], &locals);
    let mut wrong = Vec::new();
    for (key, unit) in [
        ("api", API_FUNCTION),
        ("payment", PAYMENT_FUNCTION),
        ("projector", PROJECTOR_FUNCTION),
    ] {
        // The function Terraform names `key` is the unit's binary.
        let name = hcl::format::to_string(function_names[key]).unwrap();
        assert!(
            name.ends_with(&format!("{}\"", unit.name)),
            "{key} is {name}, not {}",
            unit.name
        );
        let environment = keys(attribute(lambdas, &format!("{key}_environment")), &locals);
        wrong.extend(check_environment(&unit, &environment, &BTreeSet::new()));
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn every_worker_service_is_handed_exactly_what_its_unit_reads() {
    let main = parse(&terraform().join("main.tf"));
    let locals = locals(&main);
    let mut wrong = Vec::new();
    let mut deployed = BTreeSet::new();
    for (application, service) in object(&locals["workers"], &locals) {
        let service = object(service, &locals);
        let command = strings(service["command"]);
        if command == ["relay", "--aws"] {
            assert_eq!(application, RELAY.name);
            wrong.extend(check_environment(
                &RELAY,
                &keys(service["environment"], &locals),
                &keys(service["secrets"], &locals),
            ));
            deployed.insert("relay".to_owned());
            continue;
        }
        assert_eq!(&command[..2], ["consume", "--aws"], "{application}: {command:?}");
        let flag = |name: &str| {
            let at = command
                .iter()
                .position(|a| a == name)
                .unwrap_or_else(|| panic!("{application}: no {name}"));
            command[at + 1].clone()
        };
        assert_eq!(flag("--application"), application);
        let sink = flag("--sink");
        let unit = Unit::worker(&sink).unwrap_or_else(|| panic!("{application}: no unit for sink {sink}"));
        assert_eq!(unit.name, application, "the service is named after its unit");
        wrong.extend(check_environment(
            &unit,
            &keys(service["environment"], &locals),
            &keys(service["secrets"], &locals),
        ));
        deployed.insert(sink);
    }
    let known: BTreeSet<String> = WORKERS
        .iter()
        .map(|(sink, _)| (*sink).to_owned())
        .chain(["relay".to_owned()])
        .collect();
    assert_eq!(deployed, known, "every worker the code knows is deployed, and no other");
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Services whose actions are the platform's, not the code's: the functions' logs and
/// traces, and KMS for the customer-managed keys Terraform chose.
const PLATFORM: [&str; 3] = ["logs:", "xray:", "kms:"];

fn pairs(grants: &[(&str, &[&str])]) -> BTreeSet<(String, String)> {
    grants
        .iter()
        .flat_map(|(resource, actions)| actions.iter().map(|a| ((*resource).to_owned(), (*a).to_owned())))
        .collect()
}

#[test]
fn every_role_grants_exactly_its_units_calls() {
    let iam = locals(&parse(&terraform().join("modules/iam/main.tf")));
    let mut wrong = Vec::new();
    for unit in Unit::all() {
        let local = format!("actions_{}", unit.role.replace('-', "_"));
        let Some(policy) = iam.get(&local) else {
            wrong.push(format!("{}: no {local} in modules/iam/main.tf", unit.name));
            continue;
        };
        let granted: BTreeSet<(String, String)> = object(policy, &iam)
            .into_iter()
            .flat_map(|(resource, actions)| strings(actions).into_iter().map(move |a| (resource.clone(), a)))
            .filter(|(_, action)| !PLATFORM.iter().any(|p| action.starts_with(p)))
            .collect();
        let mut needed = pairs(unit.calls);
        needed.extend(pairs(unit.granted));
        for (resource, action) in needed.difference(&granted) {
            wrong.push(format!("{}: {action} on {resource} is needed, not granted", unit.role));
        }
        for (resource, action) in granted.difference(&needed) {
            wrong.push(format!(
                "{}: {action} on {resource} is granted, never needed",
                unit.role
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn no_role_grants_a_wildcard_action() {
    let iam = locals(&parse(&terraform().join("modules/iam/main.tf")));
    let roles: Vec<(&String, &Expression)> = iam.iter().filter(|(k, _)| k.starts_with("actions_")).collect();
    assert!(roles.len() >= Unit::all().count(), "{} action blocks", roles.len());
    for (role, policy) in roles {
        for (resource, actions) in object(policy, &iam) {
            for action in strings(actions) {
                let (service, name) = action.split_once(':').unwrap_or_else(|| panic!("{role}: {action}"));
                assert!(
                    !service.is_empty() && !name.is_empty() && !action.contains('*'),
                    "{role}: {action} on {resource}"
                );
            }
        }
    }
}

fn tf_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![terraform()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                if !entry.file_name().to_string_lossy().starts_with('.') {
                    dirs.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "tf") {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn every_file_parses_and_uses_only_real_aws_types() {
    let list = std::fs::read_to_string(terraform().join("aws-types.txt")).unwrap();
    let real: BTreeSet<&str> = list.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(real.len() > 2000, "the provider's list: {} types", real.len());
    let files = tf_files();
    assert!(files.len() >= 30, "found {} .tf files", files.len());
    let mut used = BTreeSet::new();
    for file in &files {
        for b in parse(file).blocks() {
            let kind = match b.identifier() {
                "resource" => "resource",
                "data" => "data",
                _ => continue,
            };
            let ty = b.labels().first().map(|l| l.as_str().to_owned()).unwrap();
            used.insert(format!("{kind} {ty}"));
        }
    }
    let unknown: Vec<&String> = used.iter().filter(|t| !real.contains(t.as_str())).collect();
    assert!(unknown.is_empty(), "not types of the aws provider: {unknown:?}");
    assert!(used.len() > 40, "read {} types", used.len());
}
