//! The page, compiled into the binary: no CDN, no file to deploy, no
//! request to any other host.

/// The single page; the view follows the URL (`/?stream=NAME`).
pub const INDEX_HTML: &str = include_str!("assets/index.html");
/// The page's behaviour: token handling, live view, actions.
pub const APP_JS: &str = include_str!("assets/app.js");
/// The page's look.
pub const STYLE_CSS: &str = include_str!("assets/style.css");
