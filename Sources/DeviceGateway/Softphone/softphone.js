// placeholder
document.getElementById("app").textContent = "Ringing softphone";
