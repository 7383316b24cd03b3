//! Progress bars and reports for `mosaic train`, drawn from the trainer's events.

use indicatif::{ProgressBar, ProgressStyle};
use mosaic_train::evaluate::Evaluation;
use mosaic_train::observer::{Observer, StepLog};

/// Draws a bar per run on stderr; prints reports on stdout.
#[derive(Default)]
pub struct ProgressObserver {
    bar: Option<ProgressBar>,
}

impl ProgressObserver {
    fn print(&self, text: &str, to_stdout: bool) {
        let print = || {
            if to_stdout {
                println!("{text}");
            } else {
                eprintln!("{text}");
            }
        };
        match &self.bar {
            Some(bar) => bar.suspend(print),
            None => print(),
        }
    }
}

impl Observer for ProgressObserver {
    fn message(&mut self, text: &str) {
        self.print(text, false);
    }
    fn report(&mut self, title: &str, evaluation: &Evaluation) {
        let text = format!(
            "\n== {title} ==\n{}\nloss {:.4}\n",
            evaluation.report.to_text(),
            evaluation.loss
        );
        self.print(&text, true);
    }
    fn train_start(&mut self, total_steps: usize) {
        let bar = ProgressBar::new(total_steps as u64);
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} train [{bar:30}] {pos}/{len} steps {elapsed_precise} ETA {eta} {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        self.bar = Some(bar);
    }
    fn step(&mut self, log: &StepLog) {
        if let Some(bar) = &self.bar {
            bar.set_position(log.step as u64);
            bar.set_message(format!(
                "epoch {} loss {:.4} lr {:.2e} {:.1} ex/s",
                log.epoch, log.loss, log.lr, log.examples_per_second
            ));
        }
    }
    fn train_end(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }
}
