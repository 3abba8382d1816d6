//! Bundles the API documentation front-ends (Swagger UI and ReDoc) into the binary.
//!
//! `ui/package-lock.json` pins the npm packages. They are installed with `npm ci` into
//! `$OUT_DIR/ui` (again only when the lockfile changes), and the few files the pages need are
//! copied to `$OUT_DIR/docs-assets/`, where `src/openapi/pages.rs` embeds them. Nothing is
//! fetched at run time, by the gateway or by the pages. Set `GUICHET_NPM` to use another npm
//! program.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The files the pages need, in `node_modules`; each keeps its name in `$OUT_DIR/docs-assets/`.
const ASSETS: &[&str] = &[
    "swagger-ui-dist/swagger-ui-bundle.js",
    "swagger-ui-dist/swagger-ui.css",
    "redoc/bundles/redoc.standalone.js",
];

/// ReDoc's sidebar shows Redocly's logo from their CDN. An empty `data:` URL instead keeps the
/// page on the gateway's origin: the image fails to decode and ReDoc drops it (the link stays).
const REDOC_LOGO: (&str, &str) = ("https://cdn.redoc.ly/redoc/logo-mini.svg", "data:,");

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=ui/package.json");
    println!("cargo:rerun-if-changed=ui/package-lock.json");
    println!("cargo:rerun-if-env-changed=GUICHET_NPM");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let ui = out_dir.join("ui");
    fs::create_dir_all(&ui).expect("create $OUT_DIR/ui");

    let lock = read("ui/package-lock.json");
    fs::write(ui.join("package.json"), read("ui/package.json")).expect("copy package.json");
    fs::write(ui.join("package-lock.json"), &lock).expect("copy package-lock.json");

    // A copy of the lock `node_modules` was installed from, written only once `npm ci` succeeded.
    let installed = ui.join("installed-package-lock.json");
    if !ui.join("node_modules").is_dir() || fs::read(&installed).ok().as_ref() != Some(&lock) {
        npm_ci(&ui);
        fs::write(&installed, &lock).expect("record the installed lockfile");
    }

    let assets = out_dir.join("docs-assets");
    fs::create_dir_all(&assets).expect("create $OUT_DIR/docs-assets");
    for asset in ASSETS {
        let source = ui.join("node_modules").join(asset);
        let mut body = fs::read_to_string(&source)
            .unwrap_or_else(|e| panic!("read {}: {e}", source.display()));
        if asset.starts_with("redoc/") {
            body = body.replace(REDOC_LOGO.0, REDOC_LOGO.1);
        }
        let name = source.file_name().expect("an asset is a file");
        fs::write(assets.join(name), body).expect("write an asset to $OUT_DIR/docs-assets");
    }
}

fn read(path: &str) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// Installs exactly what the lockfile pins, without running any package's install scripts.
fn npm_ci(dir: &Path) {
    let npm = env::var("GUICHET_NPM").unwrap_or_else(|_| "npm".to_owned());
    let help = "Node.js and npm are needed to build Guichet: they bundle the API documentation \
                pages (on Debian: `apt-get install nodejs npm`; set GUICHET_NPM to use another \
                npm program)";
    let output = Command::new(&npm)
        .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{help}. Could not run `{npm}`: {e}"));
    if !output.status.success() {
        panic!(
            "{help}. `{npm} ci` in {} failed ({}):\n{}",
            dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
