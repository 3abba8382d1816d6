//! The harness pieces that later tests build on.

use crate::common::RedisServer;

#[tokio::test]
async fn each_test_gets_its_own_redis_server() {
    let first = RedisServer::start().await;
    let second = RedisServer::start().await;
    assert_ne!(first.socket, second.socket);
    assert_eq!(
        first.command(&["SET", "owner", "first"]).await.as_deref(),
        Some("+OK")
    );
    assert_eq!(
        first.command(&["EXISTS", "owner"]).await.as_deref(),
        Some(":1")
    );
    assert_eq!(
        second.command(&["EXISTS", "owner"]).await.as_deref(),
        Some(":0")
    );
    let socket = first.socket.clone();
    drop(first);
    assert!(
        tokio::net::UnixStream::connect(&socket).await.is_err(),
        "stopped on drop"
    );
}
