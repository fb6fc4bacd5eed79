//! The server-rendered pages: sign-in and consent for the authorization code flow, and user code
//! entry for the device flow. Plain HTML forms, no JavaScript; every value is escaped.

use std::fmt::Write;

/// Escapes text for HTML content and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{}</title>\
         <style>body{{font-family:sans-serif;max-width:28rem;margin:3rem auto}}\
         label{{display:block;margin:.5rem 0}}.error{{color:#a00}}</style></head>\
         <body><h1>{}</h1>{}</body></html>",
        esc(title),
        esc(title),
        body
    )
}

/// An error page (when there is no redirect URI we may trust).
pub(crate) fn error_page(message: &str) -> String {
    page(
        "Sign-in error",
        &format!("<p class=\"error\">{}</p>", esc(message)),
    )
}

/// A page with a message.
pub(crate) fn message_page(title: &str, message: &str) -> String {
    page(title, &format!("<p>{}</p>", esc(message)))
}

/// The sign-in and consent page of the authorization code flow. `hidden` are the request's
/// parameters, carried through the form.
pub(crate) fn login_page(
    client_name: &str,
    scopes: &str,
    hidden: &[(&str, &str)],
    csrf: &str,
    error: Option<&str>,
) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<p><strong>{}</strong> asks to act for you with: <code>{}</code></p>",
        esc(client_name),
        esc(if scopes.is_empty() {
            "(no scopes)"
        } else {
            scopes
        })
    );
    if let Some(e) = error {
        let _ = write!(body, "<p class=\"error\">{}</p>", esc(e));
    }
    body.push_str("<form method=\"post\" action=\"/oauth/authorize\">");
    for (k, v) in hidden {
        let _ = write!(
            body,
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            esc(k),
            esc(v)
        );
    }
    let _ = write!(
        body,
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <label>User <input name=\"username\" autocomplete=\"username\" required></label>\
         <label>Password <input type=\"password\" name=\"password\" autocomplete=\"current-password\" required></label>\
         <button name=\"action\" value=\"approve\">Sign in and allow</button> \
         <button name=\"action\" value=\"deny\" formnovalidate>Deny</button></form>",
        esc(csrf)
    );
    page("Sign in", &body)
}

/// The user code entry page of the device flow.
pub(crate) fn device_page(user_code: &str, csrf: &str, error: Option<&str>) -> String {
    let mut body = String::from("<p>Enter the code shown on your device, and sign in.</p>");
    if let Some(e) = error {
        let _ = write!(body, "<p class=\"error\">{}</p>", esc(e));
    }
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/oauth/device\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <label>Code <input name=\"user_code\" value=\"{}\" required></label>\
         <label>User <input name=\"username\" autocomplete=\"username\" required></label>\
         <label>Password <input type=\"password\" name=\"password\" autocomplete=\"current-password\" required></label>\
         <button name=\"action\" value=\"approve\">Sign in and allow</button> \
         <button name=\"action\" value=\"deny\" formnovalidate>Deny</button></form>",
        esc(csrf),
        esc(user_code)
    );
    page("Connect a device", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        let p = login_page("<b>", "x", &[("state", "\"><script>")], "c", None);
        assert!(!p.contains("<script>"));
        assert!(!p.contains("<b>"));
        assert!(p.contains("&quot;&gt;&lt;script&gt;"));
    }
}
