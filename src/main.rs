//! `fnetc`: the command-line front end.

use clap::{Parser, Subcommand, ValueEnum};
use fnet::backend::{default_kind, BackendKind};
use fnet::cli::compile::{compile, write_compiled, CompileArgs};
use fnet::cli::run::{run_model, RunArgs};
use fnet::cli::{parse_set, CliError};
use fnet::diag::Report;
use fnet::driver::compile_file;
use fnet::eval::Options;
use fnet::passes::CompileMode;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "fnetc",
    version,
    about = "Compile, check and run .fnet convolutional network models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the OpenCL platforms' devices, numbered as `--device N` takes them.
    Devices,
    /// Type-check a model and summarise its inputs, outputs, layers and parameters.
    Check {
        /// The .fnet model file.
        file: PathBuf,
        /// Print a machine-readable JSON summary instead of the table.
        #[arg(long)]
        json: bool,
        /// Pooling-slot configuration: comma-separated 1-based slot numbers that
        /// downsample (e.g. `4,7`). Defaults to the model's declared default.
        #[arg(long, value_delimiter = ',')]
        config: Option<Vec<u64>>,
        /// Override a model-level constant, e.g. `--set E=8` (repeatable).
        #[arg(long = "set", value_parser = parse_set)]
        set: Vec<(String, String)>,
    },
    /// Write initial weights (safetensors) with the papers' initialisations.
    Init {
        /// The .fnet model file.
        model: PathBuf,
        /// Output weights file (.safetensors).
        #[arg(short, long)]
        output: PathBuf,
        /// Seed; defaults to the model's `seed`. The same seed gives the same bytes.
        #[arg(long)]
        seed: Option<u64>,
        /// Pooling-slot configuration (see `check --help`).
        #[arg(long, value_delimiter = ',')]
        config: Option<Vec<u64>>,
        /// Override a model-level constant, e.g. `--set E=8` (repeatable).
        #[arg(long = "set", value_parser = parse_set)]
        set: Vec<(String, String)>,
    },
    /// Run a model forward on inputs from .npy or IDX files.
    Run {
        /// The .fnet model file, or a compiled .fnc artifact.
        model: PathBuf,
        /// Weights file (.safetensors) with every parameter and buffer; not needed
        /// for an artifact compiled with --weights.
        #[arg(short, long)]
        weights: Option<PathBuf>,
        /// Input: .npy (f32/f64, NCL or NCHW) or an IDX image file (optionally .gz).
        /// A model with several inputs takes `-i NAME=FILE` once per input.
        #[arg(short, long, required = true, value_parser = fnet::cli::named_inputs::parse_input_arg)]
        input: Vec<fnet::cli::named_inputs::InputArg>,
        /// Index range of the inputs to run: `8000..8100` (items 8000 to 8099), `8000..`
        /// or `..100`; it selects the labels too.
        #[arg(long, value_parser = fnet::cli::inputs::parse_range)]
        range: Option<(Option<usize>, Option<usize>)>,
        /// Labels to report top-1 accuracy against: IDX1, or a 1-D .npy of integers or
        /// integral floats in 0..classes.
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Write the first output to this .npy file.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Pooling-slot configuration (see `check --help`).
        #[arg(long, value_delimiter = ',')]
        config: Option<Vec<u64>>,
        /// Override a model-level constant, e.g. `--set E=8` (repeatable).
        #[arg(long = "set", value_parser = parse_set)]
        set: Vec<(String, String)>,
        /// Execution backend [default: jit; opencl with --device; reference with --f64].
        #[arg(long, value_enum)]
        backend: Option<BackendKind>,
        /// OpenCL device (with `--backend opencl`): a number (see `fnetc devices`), `cpu`
        /// or `gpu`; the first GPU, else the first device, by default.
        #[arg(long)]
        device: Option<fnet::opencl::DeviceSel>,
        /// Run the elaborated graph without the optimising passes.
        #[arg(short = 'O', value_parser = ["0"])]
        opt_level: Option<String>,
        /// Compute in f64 instead of f32.
        #[arg(long)]
        f64: bool,
        /// Print every sample's top-1 class, not only the first 20.
        #[arg(long)]
        all: bool,
    },
    /// Compile a model: run the optimising passes and print the IR.
    Compile {
        /// The .fnet model file.
        #[arg(required_unless_present = "list_passes")]
        file: Option<PathBuf>,
        /// What to print at the end.
        #[arg(long, value_enum, default_value_t = Emit::Ir)]
        emit: Emit,
        /// Pooling-slot configuration (see `check --help`).
        #[arg(long, value_delimiter = ',')]
        config: Option<Vec<u64>>,
        /// Override a model-level constant, e.g. `--set E=8` (repeatable).
        #[arg(long = "set", value_parser = parse_set)]
        set: Vec<(String, String)>,
        /// Compile for training (keeps every parameter) instead of inference.
        #[arg(long)]
        training: bool,
        /// Run exactly these passes, in this order (comma-separated).
        #[arg(long, value_delimiter = ',')]
        passes: Option<Vec<String>>,
        /// Run no passes (print the elaborated graph).
        #[arg(short = 'O', value_parser = ["0"])]
        opt_level: Option<String>,
        /// Print the IR after this pass (repeatable), or after every pass with `all`.
        #[arg(long, value_delimiter = ',')]
        print_after: Vec<String>,
        /// Print each pass's time, rewrites and node count to stderr.
        #[arg(short, long)]
        verbose: bool,
        /// List the passes of the pipeline (with `--training`: the training pipeline) and exit.
        #[arg(long)]
        list_passes: bool,
        /// Bind these weights (.safetensors): checked against the model, and folded
        /// into constants where a pass can (inference).
        #[arg(short, long)]
        weights: Option<PathBuf>,
        /// Write a compiled artifact (.fnc) instead of printing the IR.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Explain every conv: kernel sizes, algorithm choice and costs, folds, fusions
        /// (with --training, the backward convs too).
        #[arg(long)]
        explain: bool,
        /// Batch size for the memory plan and the cost model (symbolic batch dims).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        batch: u64,
        /// The backend whose fitted cost table picks each conv's algorithm:
        /// `reference`, `opencl-cpu`, `opencl-gpu` or `jit` (`run` and `bench` pick
        /// the device's own); with `jit`, `--explain --training` also shows each
        /// backward conv's routine.
        #[arg(long, default_value = "reference")]
        cost_model: fnet::cost::CostTableId,
    },
    /// Time a model's forward on a backend: median and best of --iters runs, in
    /// samples/s and GFLOP/s (weights bound at compile time; seeded ones by default).
    Bench {
        /// The .fnet model file.
        model: PathBuf,
        /// Weights (.safetensors); the model's seeded initial weights by default.
        #[arg(short, long)]
        weights: Option<PathBuf>,
        /// Execution backend [default: jit; opencl with --device].
        #[arg(long, value_enum)]
        backend: Option<BackendKind>,
        /// OpenCL device (see `run --help`).
        #[arg(long)]
        device: Option<fnet::opencl::DeviceSel>,
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        batch: u64,
        /// Timed runs.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        iters: u64,
        /// Untimed runs before them.
        #[arg(long, default_value_t = 2)]
        warmup: u64,
        /// Pooling-slot configuration (see `check --help`).
        #[arg(long, value_delimiter = ',')]
        config: Option<Vec<u64>>,
        /// Override a model-level constant, e.g. `--set E=8` (repeatable).
        #[arg(long = "set", value_parser = parse_set)]
        set: Vec<(String, String)>,
        /// Run the elaborated graph without the optimising passes.
        #[arg(short = 'O', value_parser = ["0"])]
        opt_level: Option<String>,
        /// Time one training step (forward, loss, backward, in training mode) instead
        /// of a forward, and report its planned and measured peak memory.
        #[arg(long)]
        training: bool,
    },
    /// Train a model from its `train {}` section; see docs/training.md.
    Train(fnet::cli::train::TrainCmd),
    /// Draw PNG plots of a training run; see docs/training.md, "Plots".
    Plot(fnet::cli::plot::PlotCmd),
    /// Search the pooling-slot configurations with a balanced mixture of supernets;
    /// see docs/search.md.
    Search(fnet::cli::search::SearchCmd),
}

#[derive(Clone, Copy, ValueEnum)]
enum Emit {
    /// The typed graph IR.
    Ir,
    /// The syntax tree (debug form).
    Ast,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    join_rayon_pool();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Program(report)) => {
            let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            for d in &report.diagnostics {
                eprint!("{}", d.render_styled(&report.source, color));
            }
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

/// Makes this thread the first worker of rayon's global pool, when the pool has two
/// or more threads. A model run from outside the pool hands itself to a worker and
/// sleeps until it is done: two thread wake-ups a run, which at batch 1 are about 7 µs
/// of ResNet-20's 0.45 ms (`fnetc bench --batch 1`, best 0.451–0.457 against
/// 0.442–0.449 ms in four interleaved pairs). With one thread there is nothing to
/// save, and a pool of only this thread could not run work that another thread
/// handed it while this one waited outside rayon. No other thread of fnetc's uses
/// rayon (the data prefetch, progress and all-reduce threads do not).
fn join_rayon_pool() {
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1);
    if threads >= 2 {
        // An error means the pool exists already; the runs then enter it as before.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .use_current_thread()
            .build_global();
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        #[cfg(feature = "opencl")]
        Command::Devices => print!("{}", fnet::opencl::device::device_table()?),
        #[cfg(not(feature = "opencl"))]
        Command::Devices => return Err(fnet::opencl::not_built().into()),
        Command::Check {
            file,
            json,
            config,
            set,
        } => {
            let (source, module) = compile_file(
                &file,
                &Options {
                    slot_config: config,
                    overrides: set,
                },
            )?;
            fnet::driver::eprint_warnings(&source, &module);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&fnet::summary::json(&module))
                        .expect("JSON of plain data")
                );
            } else {
                print!(
                    "{}",
                    fnet::summary::table(&module, &file.display().to_string())
                );
            }
        }
        Command::Init {
            model,
            output,
            seed,
            config,
            set,
        } => {
            let options = Options {
                slot_config: config,
                overrides: set,
            };
            let n = fnet::cli::init::init(&model, &output, seed, &options)?;
            println!("wrote {n} tensors to {}", output.display());
        }
        Command::Run {
            model,
            weights,
            input,
            range,
            labels,
            output,
            config,
            set,
            backend,
            device,
            opt_level,
            f64,
            all,
        } => {
            let options = Options {
                slot_config: config,
                overrides: set,
            };
            let args = RunArgs {
                model,
                weights,
                inputs: input,
                range,
                labels,
                output: output.clone(),
                options,
                f64,
                unoptimised: opt_level.is_some(),
                backend: backend.unwrap_or_else(|| default_kind(device, f64)),
                device,
            };
            let summary = run_model(&args)?;
            println!("output shape {:?}", summary.output_shape);
            if !summary.predictions.is_empty() {
                let n = summary.predictions.len();
                let shown = if all { n } else { n.min(20) };
                let first: Vec<String> = summary.predictions[..shown]
                    .iter()
                    .map(|p| p.to_string())
                    .collect();
                let more = if shown < n {
                    format!(" ... ({n} samples; --all prints every one)")
                } else {
                    String::new()
                };
                println!("top-1: {}{more}", first.join(" "));
            }
            if let Some(acc) = summary.accuracy {
                println!(
                    "accuracy {:.2}% ({} samples)",
                    100.0 * acc,
                    summary.predictions.len()
                );
            }
            if let Some(o) = output {
                println!("wrote {}", o.display());
            }
        }
        Command::Compile {
            file,
            emit,
            config,
            set,
            training,
            passes,
            opt_level,
            print_after,
            verbose,
            list_passes,
            weights,
            output,
            explain,
            batch,
            cost_model,
        } => {
            if list_passes {
                let mode = if training {
                    CompileMode::Training
                } else {
                    CompileMode::Inference
                };
                for p in fnet::passes::pipeline::default_pipeline(mode).passes {
                    println!("{:<20} {}", p.name(), p.about());
                }
                return Ok(());
            }
            let Some(file) = file else {
                return Err(fnet::runtime::RunError::new("no model file given")
                    .hint("fnetc compile MODEL.fnet")
                    .into());
            };
            let options = Options {
                slot_config: config,
                overrides: set,
            };
            if let Emit::Ast = emit {
                let (source, _) = compile_file(&file, &options)?;
                let program = fnet::syntax::parse_program(&source.text).map_err(|d| Report {
                    source: source.clone(),
                    diagnostics: vec![d],
                })?;
                println!("{program:#?}");
                return Ok(());
            }
            let mode = if training {
                CompileMode::Training
            } else {
                CompileMode::Inference
            };
            let passes = if opt_level.is_some() {
                Some(Vec::new())
            } else {
                passes
            };
            let args = CompileArgs {
                model: file,
                options,
                mode,
                passes,
                print_after: print_after.clone(),
                verbose,
                weights,
                batch,
                cost_backend: cost_model,
                precision: fnet::ir::DType::F32,
            };
            if let Some(path) = &output {
                fnet::cli::compile::check_compiled_output(&args, path)?;
            }
            let out = compile(&args)?;
            eprint!("{}", out.timings);
            print!("{}", out.printed);
            if explain {
                print!("{}", fnet::cli::explain::explain(&out.graph, &out.ctx));
            }
            if let Some(path) = &output {
                let header = write_compiled(&out, &args, path)?;
                let bound = header.layout.iter().filter(|e| e.bound).count();
                println!(
                    "wrote {}: {} nodes, {} parameter tensors ({} bound)",
                    path.display(),
                    header.graph.nodes.len(),
                    header.layout.len(),
                    bound
                );
            } else if print_after.is_empty() && !explain {
                print!("{}", fnet::ir::print::print_graph(&out.graph));
            }
        }
        Command::Bench {
            model,
            weights,
            backend,
            device,
            batch,
            iters,
            warmup,
            config,
            set,
            opt_level,
            training,
        } => {
            let args = fnet::cli::bench::BenchArgs {
                model,
                weights,
                options: Options {
                    slot_config: config,
                    overrides: set,
                },
                backend: backend.unwrap_or_else(|| default_kind(device, false)),
                device,
                batch: batch as usize,
                iters: iters as usize,
                warmup: warmup as usize,
                unoptimised: opt_level.is_some(),
                training,
            };
            let report = fnet::cli::bench::bench(&args, &mut fnet::cli::bench::progress_bar())?;
            print!("{report}");
        }
        Command::Train(cmd) => {
            fnet::cli::train::run(&cmd)?;
        }
        Command::Plot(cmd) => {
            fnet::cli::plot::run(&cmd)?;
        }
        Command::Search(cmd) => {
            fnet::cli::search::run(&cmd)?;
        }
    }
    Ok(())
}
