//! How the jobs' progress looks to an operator: a bar on a terminal, log lines
//! otherwise ([`LogProgress`]). The jobs only count; drawing is the command line's.

use crate::app::jobs::{JobProgress, LogProgress, ProgressObserver};
use std::io::IsTerminal;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The observer for a job run from this process: a bar when stderr is a terminal.
pub fn observer() -> Arc<dyn ProgressObserver> {
    if std::io::stderr().is_terminal() {
        Arc::new(Bar::default())
    } else {
        Arc::new(LogProgress)
    }
}

/// An indicatif bar of ranges, made at the first report (which brings the total).
#[derive(Default)]
struct Bar {
    bar: OnceLock<indicatif::ProgressBar>,
}

impl ProgressObserver for Bar {
    fn period(&self) -> Duration {
        Duration::from_millis(200)
    }

    fn update(&self, job: &str, progress: JobProgress) {
        let bar = self.bar.get_or_init(|| {
            let bar = indicatif::ProgressBar::new(progress.ranges_total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} ranges, {msg}, ETA {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(job.to_owned());
            bar
        });
        bar.set_position(progress.ranges_done);
        bar.set_message(format!(
            "{} events, {:.0} events/s",
            progress.events,
            progress.rate()
        ));
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.get() {
            bar.finish_and_clear();
        }
    }
}
