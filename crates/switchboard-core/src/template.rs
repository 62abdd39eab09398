//! Message templates: a body with `{{variable}}` placeholders, rendered
//! strictly — a missing variable is an error that names it, never an empty
//! gap in a text sent to a customer.

use serde_json::{Map, Value};

/// Why a template body or its rendering was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{{` without `}}`.
    #[error("a placeholder opened at byte {0} is not closed with }}}}")]
    Unclosed(usize),
    /// A placeholder whose name is not `[A-Za-z_][A-Za-z0-9_]*`.
    #[error(
        "`{0}` is not a valid variable name (letters, digits and _, not starting with a digit)"
    )]
    BadName(String),
    /// A variable the body uses was not given.
    #[error("missing variable `{0}`")]
    Missing(String),
    /// A variable is an object, array or null.
    #[error("variable `{0}` must be a string, number or boolean")]
    NotText(String),
}

enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

fn pieces(body: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut offset = 0;
    while let Some(start) = rest.find("{{") {
        out.push(Piece::Text(&rest[..start]));
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or(TemplateError::Unclosed(offset + start))?;
        let name = after[..end].trim();
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(TemplateError::BadName(name.to_owned()));
        }
        out.push(Piece::Var(name));
        let consumed = start + 2 + end + 2;
        offset += consumed;
        rest = &rest[consumed..];
    }
    out.push(Piece::Text(rest));
    Ok(out)
}

/// The variables a body uses, in order of first use.
pub fn variables(body: &str) -> Result<Vec<String>, TemplateError> {
    let mut names: Vec<String> = Vec::new();
    for p in pieces(body)? {
        if let Piece::Var(n) = p
            && !names.iter().any(|x| x == n)
        {
            names.push(n.to_owned());
        }
    }
    Ok(names)
}

/// Renders `body` with `vars`; every placeholder must have a text value.
pub fn render(body: &str, vars: &Map<String, Value>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(body.len());
    for p in pieces(body)? {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Var(n) => match vars.get(n) {
                None => return Err(TemplateError::Missing(n.to_owned())),
                Some(Value::String(s)) => out.push_str(s),
                Some(Value::Number(x)) => out.push_str(&x.to_string()),
                Some(Value::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
                Some(_) => return Err(TemplateError::NotText(n.to_owned())),
            },
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn placeholders_are_filled() {
        let got = render(
            "Hi {{name}}, your order {{ order }} ships {{name}}!",
            &vars(json!({"name": "Ada", "order": 42})),
        )
        .unwrap();
        assert_eq!(got, "Hi Ada, your order 42 ships Ada!");
        assert_eq!(
            variables("Hi {{name}}, {{ order }} {{name}}").unwrap(),
            ["name", "order"]
        );
        assert_eq!(
            render("no placeholders", &Map::new()).unwrap(),
            "no placeholders"
        );
    }

    #[test]
    fn a_missing_variable_is_named() {
        assert_eq!(
            render("Hi {{name}} {{code}}", &vars(json!({"name": "Ada"}))),
            Err(TemplateError::Missing("code".into()))
        );
    }

    #[test]
    fn malformed_bodies_and_values_are_refused() {
        assert_eq!(variables("Hi {{name"), Err(TemplateError::Unclosed(3)));
        assert_eq!(
            variables("Hi {{ 1x }}"),
            Err(TemplateError::BadName("1x".into()))
        );
        assert_eq!(
            variables("Hi {{ a b }}"),
            Err(TemplateError::BadName("a b".into()))
        );
        assert_eq!(
            variables("Hi {{}}"),
            Err(TemplateError::BadName(String::new()))
        );
        assert_eq!(
            render("{{x}}", &vars(json!({"x": {"y": 1}}))),
            Err(TemplateError::NotText("x".into()))
        );
        assert_eq!(
            render("{{x}}", &vars(json!({"x": null}))),
            Err(TemplateError::NotText("x".into()))
        );
    }

    #[test]
    fn values_are_not_re_expanded() {
        assert_eq!(
            render("{{a}}", &vars(json!({"a": "{{b}}", "b": "no"}))).unwrap(),
            "{{b}}"
        );
    }
}
