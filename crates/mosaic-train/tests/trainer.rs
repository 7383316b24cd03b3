//! The one training loop, driven by a scripted task: what the trainer does is the same for every task, so it is
//! tested here once — the non-finite skip rule at an epoch's last window, best-checkpoint selection with a NaN
//! validation, accumulation normalised by counted targets, and the refusals a task can make.

use std::cell::{Cell, RefCell};
use std::path::Path;

use candle_core::{Device, Tensor, Var};
use mosaic_models::Mode;
use mosaic_train::collective::SINGLE_PROCESS;
use mosaic_train::observer::Silent;
use mosaic_train::recipe::{Freeze, Recipe};
use mosaic_train::run_folder::RunFolder;
use mosaic_train::trainer::{BatchLoss, CheckpointInfo, EvalPoint, FitOutcome, TrainTask, Trainer};
use mosaic_train::{Result, TrainError};

/// `loss_i = (w · x_i − 1)²` over eight examples; the batch-loss calls listed in `nan_calls` return NaN, and
/// validation returns the scripted values in turn (`None`: no validation set).
struct Scripted {
    w: Var,
    xs: Vec<f32>,
    nan_calls: Vec<usize>,
    calls: Cell<usize>,
    valid: Option<Vec<f64>>,
    validations: RefCell<Vec<EvalPoint>>,
    saved: RefCell<Vec<(String, CheckpointInfo)>>,
    in_batch: bool,
    mode: std::sync::Arc<Mode>,
}

impl Scripted {
    fn new() -> Self {
        Scripted {
            w: Var::new(&[0.5f32], &Device::Cpu).unwrap(),
            xs: (1..=8).map(|i| i as f32 / 8.0).collect(),
            nan_calls: Vec::new(),
            calls: Cell::new(0),
            valid: Some(vec![0.5; 32]),
            validations: RefCell::new(Vec::new()),
            saved: RefCell::new(Vec::new()),
            in_batch: false,
            mode: Mode::shared(),
        }
    }
}

impl TrainTask for Scripted {
    fn train_len(&self) -> usize {
        self.xs.len()
    }
    fn count(&self, batch: &[usize]) -> usize {
        batch.len()
    }
    fn accumulation_refusal(&self) -> Option<String> {
        self.in_batch
            .then(|| "negatives come from one batch: raise train.batch_size instead".into())
    }
    fn batch_loss(&self, batch: &[usize]) -> Result<BatchLoss> {
        let call = self.calls.get();
        self.calls.set(call + 1);
        let xs: Vec<f32> = batch.iter().map(|&i| self.xs[i]).collect();
        let x = Tensor::new(xs.as_slice(), &Device::Cpu)?;
        let mut loss = x
            .broadcast_mul(self.w.as_tensor())?
            .affine(1.0, -1.0)?
            .sqr()?
            .sum_all()?;
        if self.nan_calls.contains(&call) {
            loss = loss.affine(f64::NAN, 0.0)?;
        }
        Ok(BatchLoss::Sum {
            loss,
            count: batch.len(),
        })
    }
    fn set_training(&self, _training: bool) {}
    fn dropout(&self) -> &Mode {
        &self.mode
    }
    fn parameters(&self) -> Vec<(String, Var)> {
        vec![("w".into(), self.w.clone())]
    }
    fn trainable(&self, freeze: Freeze) -> Result<Vec<(String, Var)>> {
        mosaic_train::freeze::select(self.parameters(), freeze, |_| {
            mosaic_train::freeze::Role::Other
        })
    }
    fn no_decay(&self, _name: &str) -> bool {
        true
    }
    fn fgm_embeddings(&self) -> std::result::Result<Var, String> {
        Err("the scripted task has no embeddings".into())
    }
    fn validate(
        &self,
        _observer: &mut dyn mosaic_train::observer::Observer,
        at: &EvalPoint,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
        let Some(values) = &self.valid else {
            return Ok(None);
        };
        let n = self.validations.borrow().len();
        self.validations.borrow_mut().push(*at);
        let mut metrics = serde_json::Map::new();
        // A NaN is logged as null, as serde_json writes it; the trainer must read it as "not measured".
        metrics.insert("accuracy".into(), serde_json::json!(values[n]));
        Ok(Some(metrics))
    }
    fn save_checkpoint(&self, dir: &Path, info: &CheckpointInfo) -> Result<()> {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        self.saved.borrow_mut().push((name, info.clone()));
        Ok(())
    }
}

/// A recipe for the scripted task; `overrides` as `--set` takes them.
fn recipe(dir: &Path, overrides: &[&str]) -> Recipe {
    let text = format!(
        "model = \"m\"\noutput = \"{}\"\n[data]\ntrain = \"t.jsonl\"\n[train]\nbatch_size = 4\nepochs = 3\n\
         lr = 0.1\nmetric = \"accuracy\"\n",
        dir.join("run").display()
    );
    Recipe::from_toml_str_with_overrides(&text, "scripted.toml", overrides).unwrap()
}

/// How many `checkpoints/step-*` folders the run keeps.
fn step_checkpoints(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("run/checkpoints"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("step-")
        })
        .count()
}

fn fit(task: &mut Scripted, recipe: &Recipe) -> Result<FitOutcome> {
    let mut run = RunFolder::create(recipe, &SINGLE_PROCESS)?;
    let trainer = Trainer {
        config: &recipe.train,
        peft: None,
        stop: None,
        collective: &SINGLE_PROCESS,
    };
    trainer.fit(task, &mut run, None, &mut Silent)
}

#[test]
fn a_skipped_last_window_still_ends_the_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = recipe(tmp.path(), &["train.on_nonfinite=skip"]);
    let mut task = Scripted::new();
    // Two windows an epoch: call 1 is the first epoch's last window.
    task.nan_calls = vec![1];
    let outcome = fit(&mut task, &recipe).unwrap();
    assert_eq!(outcome.steps, 5, "one of six steps skipped");
    let epochs: Vec<usize> = task.validations.borrow().iter().map(|v| v.epoch).collect();
    assert_eq!(epochs, [1, 2, 3], "every epoch validated, the first too");
    let checkpoints = step_checkpoints(tmp.path());
    assert!(checkpoints >= 1);
}

#[test]
fn a_non_finite_loss_stops_the_run_by_default_naming_the_step() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = recipe(tmp.path(), &[]);
    let mut task = Scripted::new();
    task.nan_calls = vec![2];
    let err = fit(&mut task, &recipe).unwrap_err().to_string();
    assert!(err.contains("non-finite loss at step 3"), "{err}");
}

#[test]
fn a_nan_first_validation_is_never_the_best() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = recipe(tmp.path(), &[]);
    let mut task = Scripted::new();
    task.valid = Some(vec![f64::NAN, 0.4, 0.6]);
    let outcome = fit(&mut task, &recipe).unwrap();
    assert_eq!(outcome.best, Some((0.6, 6)));
    let best: Vec<usize> = task
        .saved
        .borrow()
        .iter()
        .filter(|(name, _)| name == "best")
        .map(|(_, info)| info.epoch)
        .collect();
    assert_eq!(best, [2, 3], "the NaN of epoch 1 chose nothing");
}

#[test]
fn without_validation_last_is_also_best() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = recipe(tmp.path(), &[]);
    let mut task = Scripted::new();
    task.valid = None;
    fit(&mut task, &recipe).unwrap();
    let saved: Vec<String> = task.saved.borrow().iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(saved, ["last", "best"]);
}

#[test]
fn accumulated_micro_batches_equal_one_big_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let big = recipe(
        tmp.path(),
        &[
            "train.epochs=1",
            "train.batch_size=8",
            "train.optimizer=sgd",
        ],
    );
    let mut one = Scripted::new();
    fit(&mut one, &big).unwrap();
    let accumulated = recipe(
        tmp.path(),
        &[
            "train.epochs=1",
            "train.batch_size=2",
            "train.grad_accum=4",
            "train.optimizer=sgd",
        ],
    );
    let mut four = Scripted::new();
    fit(&mut four, &accumulated).unwrap();
    let w = |t: &Scripted| t.w.as_tensor().to_vec1::<f32>().unwrap()[0];
    assert!(
        (w(&one) - w(&four)).abs() < 1e-6,
        "{} vs {}",
        w(&one),
        w(&four)
    );
}

#[test]
fn refusals_name_the_key_and_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let mut task = Scripted::new();
    task.in_batch = true;
    let err = fit(&mut task, &recipe(tmp.path(), &["train.grad_accum=2"]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("train.grad_accum") && err.contains("one batch"),
        "{err}"
    );
    let err = fit(
        &mut Scripted::new(),
        &recipe(tmp.path(), &["train.fgm_epsilon=0.1"]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("train.fgm_epsilon") && err.contains("no embeddings"),
        "{err}"
    );
    let err = fit(
        &mut Scripted::new(),
        &recipe(tmp.path(), &["train.freeze=all-but-head"]),
    )
    .unwrap_err();
    assert!(matches!(err, TrainError::Invalid(_)), "{err}");
    assert!(
        err.to_string().contains("leaves no parameter to train"),
        "{err}"
    );
}

#[test]
fn eval_every_and_save_every_count_optimizer_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = recipe(
        tmp.path(),
        &[
            "train.eval_every=2",
            "train.save_every=1",
            "train.save_total_limit=10",
        ],
    );
    let mut task = Scripted::new();
    fit(&mut task, &recipe).unwrap();
    let steps: Vec<usize> = task.validations.borrow().iter().map(|v| v.step).collect();
    assert_eq!(steps, [2, 4, 6], "every 2 steps instead of every epoch");
    let saved = step_checkpoints(tmp.path());
    assert_eq!(saved, 6, "a resumable checkpoint after every step");
}
