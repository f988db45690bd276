using System.CommandLine;
using OrleansGpt.Training.Cli;

var root = new RootCommand("OrleansGpt training tools: GPT-2 for research-paper abstracts (tokenizer, checkpoints, generation, benchmarks).");
TextCommands.AddTo(root);
DataCommands.AddTo(root);
TrainCommands.AddTo(root);
SweepCommand.AddTo(root);
ModelCommands.AddTo(root);
QualityCommand.AddTo(root);
BenchCommands.AddTo(root);
return root.Parse(args).Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
