using OrleansGpt.Silo.Api;

namespace OrleansGpt.Tests.Grains;

public sealed class OperatorAccessTests
{
    [Theory]
    [InlineData("http://127.0.0.1:5080")]
    [InlineData("http://localhost:5080")]
    [InlineData("http://[::1]:5080")]
    public void WithoutAKeyALoopbackSiloIsOpenToItsOperator(string address) =>
        Assert.Null(OperatorApi.Check("", [address], null));

    [Theory]
    [InlineData("http://0.0.0.0:5080")]
    [InlineData("http://+:5080")]
    [InlineData("http://*:5080")]
    [InlineData("http://10.1.2.3:5080")]
    public void WithoutAKeyASiloListeningBeyondLoopbackClosesItsOperatorEndpoints(string address)
    {
        var refusal = OperatorApi.Check("", ["http://127.0.0.1:5080", address], "Bearer anything");
        Assert.Equal((403, "operator_key_not_configured"), (refusal?.Status, refusal?.Code));
        Assert.Contains("Operator:ApiKey", refusal!.Value.Message);
    }

    [Fact]
    public void WithAKeyOnlyThatKeyOpensThem()
    {
        Assert.Null(OperatorApi.Check("s3cret", ["http://0.0.0.0:5080"], "Bearer s3cret"));
        foreach (var sent in new[] { null, "", "Bearer", "Bearer s3cre", "Bearer s3cret ", "Basic s3cret", "bearer s3cret" })
            Assert.Equal(401, OperatorApi.Check("s3cret", ["http://127.0.0.1:5080"], sent)?.Status);
    }
}
