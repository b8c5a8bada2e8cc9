//! Progress bars for long work, shown only when stderr is a terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

pub fn enabled() -> bool {
    std::io::stderr().is_terminal()
}

/// A byte counter bar, hidden when not on a terminal.
pub fn bytes_bar(msg: &str) -> ProgressBar {
    if !enabled() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {bytes} ({bytes_per_sec}, {elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(msg.to_owned());
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// Publisher progress on one bar.
pub struct PublishBar(pub ProgressBar);

impl stratum_publisher::Progress for PublishBar {
    fn layer_start(&self, image: &str, index: usize, count: usize, _hint: u64) {
        self.0
            .set_message(format!("{image}: layer {}/{count}", index + 1));
    }
    fn bytes(&self, n: u64) {
        self.0.inc(n);
    }
    fn layer_done(&self) {}
}
