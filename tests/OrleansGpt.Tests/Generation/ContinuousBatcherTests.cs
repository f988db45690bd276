using OrleansGpt.Training.Generation;
using OrleansGpt.Training.Model;
using static TorchSharp.torch;

namespace OrleansGpt.Tests.Generation;

public sealed class ContinuousBatcherTests
{
    private static readonly BatcherOptions s_options = new() { Slots = 4, MaxQueue = 8, MaxPromptTokens = 32, MaxNewTokens = 60, PrefillChunk = 3 };

    [Fact]
    public async Task GreedyStreamsMatchTheSimpleGeneratorTokenForToken()
    {
        using var model = TestModels.Random();
        int[][] prompts = [[1, 2, 3, 4, 5, 6, 7], [9, 8], [100, 200, 30, 40, 50], [7]];
        var expected = prompts.Select(p => new TextGenerator(model).GenerateBatch([p], [new TokenSampler(SamplingSettings.Greedy with { MaxNewTokens = 20 })])
            .Select(s => s[0].Token).ToArray()).ToArray();

        using var batcher = new ContinuousBatcher(model, s_options);
        // Four requests of different prompt lengths, prefilled in chunks of 3 while others decode.
        var streams = prompts.Select(p => TestModels.CollectAsync(batcher.GenerateAsync(p, SamplingSettings.Greedy with { MaxNewTokens = 20 }))).ToArray();
        var results = await Task.WhenAll(streams);
        for (int i = 0; i < prompts.Length; i++)
        {
            Assert.Equal(expected[i], results[i].Select(t => t.Token));
            Assert.Equal(FinishReason.Length, results[i][^1].Finish);
            Assert.All(results[i][..^1], t => Assert.Null(t.Finish));
        }
    }

    [Fact]
    public async Task ACallerWhoLeavesTheQueueGivesItsPlaceBackAtOnce()
    {
        // Wide enough that the 500-token request holding the slot cannot finish while the test looks (seconds).
        using var model = TestModels.Random(TestModels.Tiny with { BlockSize = 512, Layers = 4, Embedding = 256 });
        using var batcher = new ContinuousBatcher(model, new BatcherOptions { Slots = 1, MaxQueue = 1, MaxPromptTokens = 8, MaxNewTokens = 500 });
        using var cancel = new CancellationTokenSource();
        // One long request holds the only slot; a second waits in the only queue place.
        var running = batcher.GenerateAsync([1, 2], new SamplingSettings { MaxNewTokens = 500, Seed = 1 }, cancel.Token).GetAsyncEnumerator();
        Assert.True(await running.MoveNextAsync());
        using var leaving = new CancellationTokenSource();
        var waiting = batcher.GenerateAsync([3, 4], new SamplingSettings { MaxNewTokens = 5, Seed = 2 }, leaving.Token).GetAsyncEnumerator();
        var first = waiting.MoveNextAsync().AsTask();
        Assert.Equal(1, batcher.Queued);
        Assert.Throws<ServerBusyException>(() => batcher.GenerateAsync([5], new SamplingSettings { MaxNewTokens = 5 }));

        // The waiting caller disconnects: its place is free at once, while the slot is still busy.
        leaving.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => first);
        await waiting.DisposeAsync();
        Assert.Equal(0, batcher.Queued);
        var next = batcher.GenerateAsync([8], new SamplingSettings { MaxNewTokens = 3, Seed = 3 });
        cancel.Cancel();
        await running.DisposeAsync();
        Assert.Equal(3, (await TestModels.CollectAsync(next)).Count);
        Assert.Equal(0, batcher.Queued);
    }

    [Fact]
    public async Task ACancelledRequestGivesItsPlaceBackWhenItsCallerCancelsNotWhenItsStreamIsNextRead()
    {
        // As a silo sees a caller leave: the cancellation arrives (an Orleans cancel message, a closed connection) on
        // some thread, while the code reading that request's stream has not run yet. The next caller must find room.
        using var model = TestModels.Random(TestModels.Tiny with { BlockSize = 512, Layers = 4, Embedding = 256 });
        using var batcher = new ContinuousBatcher(model, new BatcherOptions { Slots = 1, MaxQueue = 1, MaxPromptTokens = 8, MaxNewTokens = 500 });
        using var hold = new CancellationTokenSource();
        var running = batcher.GenerateAsync([1, 2], new SamplingSettings { MaxNewTokens = 500, Seed = 1 }, hold.Token).GetAsyncEnumerator();
        Assert.True(await running.MoveNextAsync());
        using var leaving = new CancellationTokenSource();
        var left = batcher.GenerateAsync([3, 4], new SamplingSettings { MaxNewTokens = 5, Seed = 2 }, leaving.Token); // queued, never read
        Assert.Throws<ServerBusyException>(() => batcher.GenerateAsync([5], new SamplingSettings { MaxNewTokens = 5 }));

        leaving.Cancel();
        var next = batcher.GenerateAsync([8], new SamplingSettings { MaxNewTokens = 3, Seed = 3 });
        hold.Cancel();
        await running.DisposeAsync();
        Assert.Equal(3, (await TestModels.CollectAsync(next)).Count);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => TestModels.CollectAsync(left));
    }

    [Fact]
    public async Task ARequestRacingTheEnginesDisposalIsRefusedOrEndsButNeverHangs()
    {
        // A hot swap retires an engine while callers that looked it up a moment earlier are still queueing on it. Each
        // such request must be refused at once or end (served, or failed with ObjectDisposedException, which the model
        // grain answers by taking the new engine); none may wait forever on a loop that has finished.
        using var model = TestModels.Random();
        var settings = new SamplingSettings { MaxNewTokens = 2, Seed = 1 };
        int refused = 0, ended = 0;
        for (int round = 0; round < 200; round++)
        {
            var batcher = new ContinuousBatcher(model, s_options with { MaxQueue = 100_000 });
            var streams = new List<IAsyncEnumerable<StreamedToken>>();
            using var started = new ManualResetEventSlim();
            var caller = Task.Run(() =>
            {
                started.Set();
                while (true)
                {
                    try
                    {
                        streams.Add(batcher.GenerateAsync([1, 2], settings));
                    }
                    catch (ObjectDisposedException)
                    {
                        Interlocked.Increment(ref refused);
                        return;
                    }
                }
            });
            started.Wait();
            Thread.SpinWait(round * 50); // dispose at varying points of the caller's loop
            batcher.Dispose();
            await caller;
            foreach (var stream in streams)
            {
                var reading = TestModels.CollectAsync(stream);
                await Task.WhenAny(reading, Task.Delay(TimeSpan.FromSeconds(10)));
                Assert.True(reading.IsCompleted, $"round {round}: a request queued on a disposed engine never ended");
                Interlocked.Increment(ref ended);
            }
        }
        Assert.Equal(200, refused);
    }

    [Fact]
    public async Task ARequestArrivingMidBatchStartsBeforeTheBatchDrains()
    {
        // The long request runs 480 steps (tens of milliseconds even here), so the short one arrives while it runs.
        using var model = TestModels.Random(TestModels.Tiny with { BlockSize = 512 });
        using var batcher = new ContinuousBatcher(model, s_options with { MaxNewTokens = 480 });
        var longStream = batcher.GenerateAsync([1, 2, 3], new SamplingSettings { MaxNewTokens = 480, Seed = 1 }).GetAsyncEnumerator();
        for (int i = 0; i < 5; i++) Assert.True(await longStream.MoveNextAsync());

        var shortOne = await TestModels.CollectAsync(batcher.GenerateAsync([4, 5], new SamplingSettings { MaxNewTokens = 4, Seed = 2 }));
        var longOne = new List<StreamedToken>();
        while (await longStream.MoveNextAsync()) longOne.Add(longStream.Current);
        await longStream.DisposeAsync();

        Assert.Equal(4, shortOne.Count);
        Assert.Equal(480 - 5, longOne.Count);
        // The short request's tokens came out of the same decode steps as the long one's, and it was done before
        // the long one: it joined the running batch rather than waiting for it to drain.
        Assert.Contains(longOne, t => t.Step == shortOne[^1].Step);
        Assert.True(shortOne[^1].Step < longOne[^1].Step, $"short ended at step {shortOne[^1].Step}, long at {longOne[^1].Step}");
    }

    [Fact]
    public async Task CancellingAStreamFreesItsSlotForTheNextRequest()
    {
        using var model = TestModels.Random();
        using var batcher = new ContinuousBatcher(model, s_options with { Slots = 1 });
        using var cancel = new CancellationTokenSource();
        int received = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var _ in batcher.GenerateAsync([1, 2], new SamplingSettings { MaxNewTokens = 60, Seed = 1 }, cancel.Token))
                if (++received == 3) cancel.Cancel();
        });
        Assert.Equal(3, received);
        // With one slot, this can only run once the cancelled request's slot is free.
        var next = await TestModels.CollectAsync(batcher.GenerateAsync([3], new SamplingSettings { MaxNewTokens = 5, Seed = 2 })).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(5, next.Count);
        Assert.Equal(0, batcher.Running);
    }

    [Fact]
    public async Task AFullQueueRefusesWithBusyInsteadOfGrowing()
    {
        using var model = TestModels.Random();
        using var batcher = new ContinuousBatcher(model, s_options with { Slots = 1, MaxQueue = 1 });
        // Ten requests back to back against one slot and one queued place: the engine holds at most two, and
        // the rest are refused at once. (Only a 60-token request finishing within these ten synchronous calls
        // could free room for a third.)
        var accepted = new List<IAsyncEnumerable<StreamedToken>>();
        var refusals = new List<ServerBusyException>();
        for (int i = 0; i < 10; i++)
        {
            try
            {
                accepted.Add(batcher.GenerateAsync([1 + i], new SamplingSettings { MaxNewTokens = 60, Seed = i }));
            }
            catch (ServerBusyException e)
            {
                refusals.Add(e);
            }
        }
        Assert.InRange(accepted.Count, 1, 2);
        Assert.Equal(10 - accepted.Count, refusals.Count);
        Assert.All(refusals, e => Assert.Equal(TimeSpan.FromSeconds(1), e.RetryAfter));
        foreach (var stream in accepted)
            Assert.Equal(60, (await TestModels.CollectAsync(stream)).Count); // what was accepted runs to the end
    }

    [Fact]
    public void OutOfBoundsRequestsAreRefusedWithTheLimit()
    {
        using var model = TestModels.Random();
        using var batcher = new ContinuousBatcher(model, s_options);
        Assert.Contains("limit is 32", Assert.Throws<ArgumentException>(() => batcher.GenerateAsync(new int[33], new SamplingSettings())).Message);
        Assert.Contains("limited to 60", Assert.Throws<ArgumentOutOfRangeException>(() => batcher.GenerateAsync([1], new SamplingSettings { MaxNewTokens = 61 })).Message);
        Assert.Throws<ArgumentException>(() => batcher.GenerateAsync([], new SamplingSettings()));
        Assert.Throws<ArgumentOutOfRangeException>(() => batcher.GenerateAsync([300], new SamplingSettings()));
        Assert.Throws<ArgumentOutOfRangeException>(() => batcher.GenerateAsync([1], new SamplingSettings { TopP = 0 }));
    }

    [Fact]
    public async Task ASeededRequestGivesTheSameTokensAloneAndUnderLoad()
    {
        using var model = TestModels.Random();
        using var batcher = new ContinuousBatcher(model, s_options);
        var settings = new SamplingSettings { TopP = 0.9, Temperature = 1.1, MaxNewTokens = 30, Seed = 99 };
        var alone = await TestModels.CollectAsync(batcher.GenerateAsync([5, 6, 7, 8], settings));

        var load = Enumerable.Range(0, 3).Select(i => TestModels.CollectAsync(batcher.GenerateAsync([.. Enumerable.Range(10 + i, 3 + i * 4)], settings with { Seed = i }))).ToList();
        var loaded = await TestModels.CollectAsync(batcher.GenerateAsync([5, 6, 7, 8], settings));
        await Task.WhenAll(load);
        Assert.Equal(alone.Select(t => t.Token), loaded.Select(t => t.Token));
    }

    [Fact]
    public void LogitsOfARowAreCloseButNotBitIdenticalAcrossBatchShapes()
    {
        // What we claim: on CPU the same sequence's logits alone and inside a batch agree to ~1e-6 (different GEMM
        // kernels and the single-row output path round differently), not bit for bit. Seeded sampling repeats
        // unless a draw falls within that distance of a boundary between two tokens.
        using var model = TestModels.Random();
        using var _ = no_grad();
        using var alone = model.NextTokenLogits(TestModels.Ids(1, 2, 3, 4));
        using var batch = model.NextTokenLogits(tensor(new long[] { 1, 2, 3, 4, 9, 9, 9, 9, 5, 5, 5, 5 }, [3L, 4]));
        float diff = Model.GptModelTests.MaxAbsDiff(TestModels.Values(alone[0]), TestModels.Values(batch[0]));
        Assert.True(diff < 1e-5f, $"max |diff| {diff}");
    }

    [Fact]
    public async Task ARequestTheModelCannotComputeFailsAloneWhileTheRestOfItsBatchGoesOn()
    {
        // Position 30's embedding is NaN, as in a model never trained that far: a request reaching position 30 gets
        // NaN logits, while shorter ones are fine. (A NaN token row cannot do this: the output layer is tied to the
        // token embedding, so that token's logit would be NaN for every request.)
        using var model = TestModels.Random();
        using (no_grad())
            model.named_parameters().First(p => p.name.EndsWith("wpe.weight", StringComparison.Ordinal)).parameter[30].fill_(float.NaN);
        using var batcher = new ContinuousBatcher(model, s_options);
        int[] healthy = [1, 2, 3, 4, 5], poisoned = [.. Enumerable.Range(20, 32)], after = [40, 41];
        var settings = SamplingSettings.Greedy with { MaxNewTokens = 25 }; // the healthy requests end at position 29
        var healthyAlone = await TestModels.CollectAsync(batcher.GenerateAsync(healthy, settings));
        var afterAlone = await TestModels.CollectAsync(batcher.GenerateAsync(after, settings));

        // Slot 0 decodes the healthy request while slot 1 prefills the poisoned one in chunks of 3 beside it.
        var running = TestModels.CollectAsync(batcher.GenerateAsync(healthy, settings));
        var failure = await Assert.ThrowsAsync<RequestFailedException>(() => TestModels.CollectAsync(batcher.GenerateAsync(poisoned, settings)));
        Assert.Contains("not finite", failure.Message);
        var reused = await TestModels.CollectAsync(batcher.GenerateAsync(after, settings)); // the failed request's slot, cleared

        Assert.Equal(healthyAlone.Select(t => t.Token), (await running).Select(t => t.Token));
        Assert.Equal(afterAlone.Select(t => t.Token), reused.Select(t => t.Token));
        Assert.Equal((1L, 0), (batcher.Failed, batcher.ConsecutiveFailures)); // requests served since: healthy again
        Assert.Contains("not finite", batcher.LastFailure);
    }
}
