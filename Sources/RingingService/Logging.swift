// How the executables log: swift-log to stderr, at the level of RINGING_LOG_LEVEL.
public import Logging

public enum RingingLogging {
    /// Bootstraps swift-log once per process: stderr, at `RINGING_LOG_LEVEL` (trace … critical),
    /// or at `fallback` when it is unset or not a level.
    public static func bootstrap(default fallback: Logger.Level, environment: Environment = Environment()) {
        let level = environment.values["RINGING_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? fallback
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}
