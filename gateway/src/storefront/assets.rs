//! The files of `gateway/web/`, compiled in, and the names they are served
//! under. A page names its assets as `{{asset:NAME}}`; at start each is
//! replaced by `/assets/<stem>.<hash>.<ext>`, the hash being the first 12
//! hex digits of the file's SHA-256, so a changed file is a new URL.
use std::collections::HashMap;

use actix_web::web::Bytes;
use sha2::{Digest, Sha256};

pub enum Kind {
    /// Revalidated on every load.
    Page,
    /// Named by its content: cached for good.
    Asset,
}

pub struct Asset {
    pub kind: Kind,
    pub content_type: &'static str,
    pub body: Bytes,
    /// A strong validator: the quoted content hash.
    pub etag: String,
    /// The body gzipped, with its own validator; `None` where gzip saves
    /// too little to be worth a second representation.
    pub gzip: Option<(Bytes, String)>,
}

impl Asset {
    fn new(kind: Kind, content_type: &'static str, body: Bytes, hash: &str) -> Self {
        let gzip = gzipped(&body).map(|gz| (gz, format!("\"{hash}-gzip\"")));
        Self {
            kind,
            content_type,
            body,
            etag: format!("\"{hash}\""),
            gzip,
        }
    }
}

/// `content` gzipped at the best level (once, at start), if that saves at
/// least a tenth.
fn gzipped(content: &[u8]) -> Option<Bytes> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(content).ok()?;
    let gz = encoder.finish().ok()?;
    (gz.len() * 10 < content.len() * 9).then(|| Bytes::from(gz))
}

/// (name, type, content) of every asset a page may name.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/app.css"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/api.js"),
    ),
    (
        "storefront.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/storefront.js"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/console.js"),
    ),
    (
        "uPlot.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/vendor/uPlot.iife.min.js"),
    ),
    (
        "uPlot.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/vendor/uPlot.min.css"),
    ),
];

/// (path, content) of the pages.
const PAGES: &[(&str, &str)] = &[
    ("/", include_str!("../../web/index.html")),
    ("/console", include_str!("../../web/console.html")),
];

fn hash(content: &[u8]) -> String {
    let digest = Sha256::digest(content);
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// `app.css` with hash `h` is served at `/assets/app.h.css`.
fn hashed_path(name: &str, hash: &str) -> String {
    match name.rsplit_once('.') {
        Some((stem, ext)) => format!("/assets/{stem}.{hash}.{ext}"),
        None => format!("/assets/{name}.{hash}"),
    }
}

/// Every page and asset by the path it is served at.
pub fn all() -> HashMap<String, Asset> {
    let mut files = HashMap::new();
    let mut names = Vec::new();
    for (name, content_type, content) in ASSETS {
        let hash = hash(content);
        let path = hashed_path(name, &hash);
        names.push((format!("{{{{asset:{name}}}}}"), path.clone()));
        files.insert(
            path,
            Asset::new(
                Kind::Asset,
                content_type,
                Bytes::from_static(content),
                &hash,
            ),
        );
    }
    for (path, template) in PAGES {
        let page = names
            .iter()
            .fold((*template).to_owned(), |page, (placeholder, url)| {
                page.replace(placeholder, url)
            });
        let hash = hash(page.as_bytes());
        files.insert(
            (*path).to_owned(),
            Asset::new(
                Kind::Page,
                "text/html; charset=utf-8",
                Bytes::from(page),
                &hash,
            ),
        );
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_name_only_assets_that_exist_and_by_their_hash() {
        let files = all();
        for (path, _) in PAGES {
            let page = std::str::from_utf8(&files[*path].body).expect("utf-8");
            assert!(!page.contains("{{"), "{path} names an unknown asset");
            for url in page.split('"').filter(|s| s.starts_with("/assets/")) {
                assert!(files.contains_key(url), "{path} names {url}, not served");
            }
            // Nothing from another origin.
            assert!(!page.contains("//"), "{path} names another origin");
        }
    }

    #[test]
    fn the_gzipped_body_is_the_body() {
        use std::io::Read;
        let files = all();
        let script = files
            .values()
            .find(|a| a.content_type.starts_with("text/javascript") && a.body.len() > 10_000)
            .expect("a large script");
        let (gz, etag) = script.gzip.as_ref().expect("a large script compresses");
        assert!(gz.len() < script.body.len() / 2);
        assert_ne!(
            etag, &script.etag,
            "each representation has its own validator"
        );
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut plain)
            .expect("gzip");
        assert_eq!(plain, script.body);
    }

    #[test]
    fn a_changed_file_is_a_new_name() {
        assert_ne!(hash(b"a"), hash(b"b"));
        assert_eq!(hashed_path("app.css", "0a1b"), "/assets/app.0a1b.css");
    }
}
