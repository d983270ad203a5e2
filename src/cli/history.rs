//! `history`: a user's audit trail, or their profile as of an instant.

use super::{CliError, open_for_operator, parse_user_id};
use crate::app::audit_trail;
use crate::app::representation::{UserResponse, etag};
use crate::config::StoreArgs;
use clap::Args;

/// Arguments of `history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The user id.
    pub user_id: String,
    /// RFC 3339 instant: print the profile as it was then instead.
    #[arg(long = "as-of")]
    pub as_of: Option<String>,
    /// Print JSON (the API's representation) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Where the store is.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Prints what `GET /api/v1/users/{id}/history` shows.
pub async fn run(args: HistoryArgs) -> Result<(), CliError> {
    let user_id = parse_user_id(&args.user_id)?;
    let as_of = args
        .as_of
        .as_deref()
        .map(|raw| {
            chrono::DateTime::parse_from_rfc3339(raw)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|_| {
                    CliError::Usage(format!(
                        "invalid --as-of {raw:?}: expected an RFC 3339 timestamp"
                    ))
                })
        })
        .transpose()?;
    let store = open_for_operator(&args.store).await?;
    if let Some(instant) = as_of {
        let row = audit_trail::profile_as_of(store.as_ref(), user_id, instant)
            .await?
            .ok_or_else(|| {
                CliError::Failed(format!("user {user_id} did not exist at {instant}"))
            })?;
        let user = UserResponse::from(&row);
        if args.json {
            println!(
                "{}",
                serde_json::json!({"as_of": instant, "user": user, "etag": etag(&row)})
            );
        } else {
            println!("user {user_id} as of {instant}:");
            println!(
                "{}",
                serde_json::to_string_pretty(&user).unwrap_or_default()
            );
        }
        return Ok(());
    }
    let events = audit_trail::all_events(store.as_ref(), user_id).await?;
    // An erased user has no row but still a log: its skeleton is listed.
    let current = match store.find_user(user_id).await? {
        Some(current) => current,
        None if !events.is_empty() => crate::domain::UserRow::empty(user_id),
        None => return Err(CliError::Failed(format!("no user {user_id}"))),
    };
    let audited: Vec<audit_trail::AuditedEvent> = events
        .iter()
        .map(|e| audit_trail::AuditedEvent::new(e, &current))
        .collect();
    if args.json {
        println!(
            "{}",
            serde_json::json!({"userId": user_id, "events": audited})
        );
        return Ok(());
    }
    println!(
        "history of user {user_id}, newest first ({} events)",
        audited.len()
    );
    for event in &audited {
        println!(
            "{}  {:<20} by {}  request {}  event {}",
            event
                .occurred_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            event.event_type,
            event.actor,
            event.request_id.as_deref().unwrap_or("-"),
            event.event_id,
        );
        for (field, change) in &event.fields {
            let from = change
                .from
                .as_ref()
                .map_or_else(|| "null".to_owned(), ToString::to_string);
            println!(
                "    {field:<16} {from} -> {}   {}",
                change.to,
                if change.winning {
                    "(current)"
                } else {
                    "(overwritten)"
                }
            );
        }
    }
    Ok(())
}
