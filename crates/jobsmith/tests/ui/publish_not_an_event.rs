use jobsmith::prelude::*;

#[derive(serde::Serialize, serde::Deserialize)]
struct Welcome {
    user_id: u64,
}

async fn publish(app: &App) -> jobsmith::Result<()> {
    app.publish(Welcome { user_id: 7 }).await?;
    Ok(())
}

fn main() {
    let _ = publish;
}
