//! The dashboard page: one HTML file with its script and style embedded (the head node may
//! have no internet), given the nodes and events as of the request; the script keeps it live
//! from `/api/v1/events` (and polls `/api/v1/nodes`).

const PAGE: &str = include_str!("assets/dashboard.html");

/// JSON made safe inside a `<script>` element.
fn script_safe(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// The page, with the nodes and events (JSON arrays) it starts from.
pub fn page(nodes_json: &str, events_json: &str) -> String {
    PAGE.replacen("/*NODES*/[]", &script_safe(nodes_json), 1)
        .replacen("/*EVENTS*/[]", &script_safe(events_json), 1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn data_cannot_close_the_script() {
        let p = super::page(r#"[{"name":"</script><b>"}]"#, "[]");
        assert!(!p.contains("</script><b>"));
        assert!(p.contains("\\u003c/script\\u003e"));
    }
}
