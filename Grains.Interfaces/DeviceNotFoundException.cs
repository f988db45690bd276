namespace OrleansGpt.Grains.Interfaces;

/// <summary>A model grain key names a device that no silo in the cluster owns (or that silo has left).</summary>
[GenerateSerializer]
public sealed class DeviceNotFoundException(string message) : Exception(message);
