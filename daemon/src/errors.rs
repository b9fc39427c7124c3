//! How an error and its causes read on one line for a person: each cause once. Error types
//! here and in the libraries below often include their cause in their own message, so
//! printing the whole chain (as `{:#}` does) says the same thing two or three times.

/// `error`, then each cause whose text the line does not already say, joined by `: `.
pub fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut last = text.clone();
    let mut cause = error.source();
    while let Some(next) = cause {
        let said = next.to_string();
        if !said.is_empty() && !text.contains(&said) && !said.ends_with(&last) {
            text.push_str(": ");
            text.push_str(&said);
        }
        last = said;
        cause = next.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open {path}: {source}")]
    struct Outer {
        path: &'static str,
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("starting")]
    struct Top {
        #[source]
        source: Outer,
    }

    #[test]
    fn each_cause_is_said_once() {
        let error = Top {
            source: Outer {
                path: "/x",
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            },
        };
        assert_eq!(
            one_line(&error),
            "starting: cannot open /x: entity not found"
        );
    }
}
