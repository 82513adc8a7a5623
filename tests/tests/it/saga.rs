//! What only HTTP sagas have (the scenarios every transport shares are in
//! `transport_suite`): DTM posts each step's JSON payload.

use crate::support::*;

#[tokio::test]
async fn dtm_posts_the_json_payload() {
    let dtm = dtm();
    let gid = gid("saga-post");
    dtm.saga(&gid)
        .add(&url("TransOut"), &url("TransOutRevert"), &BusiReq::new(30))
        .submit()
        .await
        .unwrap();
    wait_status(&dtm, &gid, "succeed").await;
    let calls = busi().calls(&gid);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].method, "POST");
    assert_eq!(
        serde_json::from_str::<BusiReq>(&calls[0].body).unwrap(),
        BusiReq::new(30)
    );
}
