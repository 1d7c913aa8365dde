//! The server starts on port 0, serves its pages and health endpoint, and stops cleanly.
mod common;
use common::TestServer;

#[tokio::test]
async fn server_starts_serves_pages_and_stops() {
    let mut server = TestServer::start().await;
    let (status, _) = server.http.get("/", None).await;
    assert_eq!(status, 200);
    let (status, _) = server.http.get("/assets/panel.js", None).await;
    assert_eq!(status, 200);
    server.stop().await;
}
