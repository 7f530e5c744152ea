"""The names under which netwatchd answers on the system bus (the D-Bus contract), shared by the
service (netwatchd.api.dbus) and its client (netwatchd.ctl) without either importing the other."""

BUS_NAME = "org.netwatchd.Netwatchd1"
OBJECT_PATH = "/org/netwatchd/Netwatchd1"
MANAGER_INTERFACE = "org.netwatchd.Netwatchd1.Manager"
ERROR_INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
ERROR_FAILED = "org.freedesktop.DBus.Error.Failed"
ERROR_NO_SUCH_DEVICE = "org.netwatchd.Netwatchd1.Error.NoSuchDevice"
