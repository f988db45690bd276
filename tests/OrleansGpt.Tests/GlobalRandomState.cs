namespace OrleansGpt.Tests;

/// <summary>
/// Tests that depend on libtorch's process-wide random generator (dropout during training, exact resumption).
/// Building any model elsewhere advances that generator (nn.Embedding initialises itself from it), so these
/// tests run alone, never beside other test classes.
/// </summary>
[CollectionDefinition(nameof(GlobalRandomState), DisableParallelization = true)]
public sealed class GlobalRandomState;
