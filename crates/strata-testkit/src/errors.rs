//! Error formatting for test failure messages.

/// `e` and every `source()` below it, joined with `": "`: what a failed assertion should
/// show (the top-level message alone often hides the path or digest at fault).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(x) = source {
        s.push_str(": ");
        s.push_str(&x.to_string());
        source = x.source();
    }
    s
}
