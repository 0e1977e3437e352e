//! The GraphQL schema committed in `crates/api/graphql/schema.graphql` is the
//! one the daemon serves: a change to the schema changes the file in the same
//! commit (run with `HANGAR_UPDATE_SDL=1` to rewrite it, then review the diff).

#[test]
fn the_committed_sdl_is_the_served_schema() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("graphql/schema.graphql");
    let served = hangar_api::graphql::sdl();
    if std::env::var_os("HANGAR_UPDATE_SDL").is_some() {
        std::fs::write(&path, &served).expect("write the SDL");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == served,
        "{} differs from the schema the daemon serves; run \
         `HANGAR_UPDATE_SDL=1 cargo test -p hangar-api --test graphql_sdl` and commit the file",
        path.display()
    );
}
